"""The feature store: what a changed dataset costs, and what a view costs to resolve and read.

Parts (each prints its figures):

1. ``--data``: the real photos, each step as the command a user runs
   (``run_pipeline.py extract --json`` in a fresh process, so TensorFlow's
   import is counted): a full extraction into an empty cache, the same
   folder with 10 new photos, then a no-change rerun. Then, from Python in
   one process as in a notebook, a 200-photo folder (below ``auto``'s
   OpenVINO threshold, so Keras runs it) gains 10 photos a call: each
   call's wall time with the network kept from the call before, and with
   it dropped first, alternated. Then a store that grows by 200 photos a
   run from 900, as commands: ``auto`` against Keras in a twin cache.
2. A synthetic store of ``--rows`` rows (``--dim`` float32 features, one
   segment per ``--chunk-size`` rows): resolving a view of every row against
   it (index + materialised view file), in a child process so its peak
   memory is its own.
3. Stage 2's read of a split from that materialised view, against the same
   rows as an HDF5 virtual dataset mapping the store's segments (in store
   order, the best case for it, and in a shuffled order, as after a
   re-split), with the disk each takes.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_incremental.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _cpu import cpu_line  # this folder is on sys.path when the script runs
from _peak import peak_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def extract(data: Path, cache: Path, *extra: str) -> dict:
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data", str(data),
               "--cache-dir", str(cache), "--json", "--no-progress", *extra]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    result = json.loads(out)
    result["command_seconds"] = round(time.perf_counter() - started, 2)
    return result


def real_photos(data: Path, work: Path) -> None:
    from pipeline.features.hashing import RACY_SECONDS

    copy = shutil.copytree(data, work / "photos")
    time.sleep(RACY_SECONDS)  # as photos on disk are: not written within the last moments
    cache = work / "cache"
    rows = []
    full = extract(copy, cache)
    rows.append(("full extraction", full))
    flipped_copies(sorted((copy / "train" / "cats").glob("*.jpg"))[:10], "new_")
    time.sleep(RACY_SECONDS)
    rows.append(("10 photos added", extract(copy, cache)))
    rows.append(("no-change rerun", extract(copy, cache)))
    print(f"{'step':<18} {'computed':>8} {'reused':>7} {'read':>6} {'seconds (JSON)':>15} "
          f"{'command s':>10} {'images/s':>9}")
    for name, r in rows:
        print(f"{name:<18} {r['computed']:>8} {r['reused']:>7} {r['fingerprinted']:>6} "
              f"{r['seconds']:>15.3f} {r['command_seconds']:>10.2f} {r['images_per_second']:>9.1f}")


def growing_store(data: Path, work: Path, steps: int = 2) -> None:
    """A store that grows by 200 photos a run from 900: ``auto`` (which converts for OpenVINO
    once the store reaches 1000 rows) against Keras in a twin cache (what ``auto`` ran for
    such a store when only the images of one run counted), each run a whole command."""
    from pipeline.features import FeatureCache
    from pipeline.features.hashing import RACY_SECONDS

    folder = work / "growing"

    def grow(upto: int) -> None:
        train_photos(data, folder, upto // 2)
        time.sleep(RACY_SECONDS)

    def engine(result: dict) -> str:
        extraction = FeatureCache(result["cache"]).extraction
        return f"{extraction['engine']}, conversion {extraction['conversion_seconds']:.1f} s"

    grow(900)
    first = extract(folder, work / "grow-auto")
    shutil.copytree(work / "grow-auto", work / "grow-keras")
    print(f"a store grown by 200 photos a run: 900 first ({engine(first)}, "
          f"{first['command_seconds']:.2f} s as a command), then:")
    for step in range(1, steps + 1):
        grow(900 + 200 * step)
        auto, keras = extract(folder, work / "grow-auto"), extract(folder, work / "grow-keras", "--engine", "keras")
        print(f"  to {900 + 200 * step} rows: auto ({engine(auto)}) {auto['command_seconds']:.2f} s, "
              f"loop {auto['images_per_second']:.0f} images/s; keras {keras['command_seconds']:.2f} s, "
              f"loop {keras['images_per_second']:.0f} images/s")


def train_photos(data: Path, folder: Path, per_class: int) -> None:
    """The first ``per_class`` training photos of each class copied into ``folder`` (those
    already there are left as they are)."""
    for cls in ("cats", "dogs"):
        (folder / "train" / cls).mkdir(parents=True, exist_ok=True)
        for photo in sorted((data / "train" / cls).glob("*.jpg"))[:per_class]:
            if not (folder / "train" / cls / photo.name).exists():
                shutil.copy(photo, folder / "train" / cls / photo.name)


def flipped_copies(sources: list[Path], prefix: str) -> None:
    """New photos with new bytes: mirrored copies beside their sources."""
    from PIL import Image

    for i, source in enumerate(sources):
        Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            source.with_name(f"{prefix}{i}.jpg"), quality=90)


def in_one_process(data: Path, work: Path, rounds: int = 3) -> None:
    from pipeline import ExtractConfig, extract_features
    from pipeline.features import engines
    from pipeline.features.hashing import RACY_SECONDS

    small = work / "small"
    train_photos(data, small, 100)
    sources = sorted((small / "train" / "cats").glob("*.jpg"))
    config = ExtractConfig(cache_dir=str(work / "small-cache"))
    time.sleep(RACY_SECONDS)
    first = extract_features(small, config, progress=False)  # imports, the network built and traced
    times: dict[str, list[float]] = {"kept": [], "built again": []}
    for r in range(2 * rounds):
        flipped_copies(sources[10 * r:10 * r + 10], f"added_{r}_")
        time.sleep(RACY_SECONDS)
        how = ("kept", "built again")[r % 2]
        if how == "built again":
            engines._last_forward.cache_clear()
        started = time.perf_counter()
        result = extract_features(small, config, progress=False)
        times[how].append(time.perf_counter() - started)
        assert result.computed == 10, result.computed
    print(f"in one process: {first.computed} photos first ({first.seconds:.2f} s, engine "
          f"{first.open().extraction['engine']}), then 10 added a call:")
    for how, t in times.items():
        print(f"  network {how:<12}: " + " / ".join(f"{x:.2f}" for x in t) + " s a call")


def synthetic_store(folder: Path, rows: int, dim: int, chunk: int) -> list[str]:
    from pipeline.features.store import FeatureStore

    store = FeatureStore.create(folder, {"synthetic": True, "dim": dim})
    rng = np.random.default_rng(0)
    fps = [rng.bytes(16).hex() for _ in range(rows)]
    for start in range(0, rows, chunk):
        part = fps[start:start + chunk]
        store.write_segment(part, rng.normal(size=(len(part), dim)).astype("float32"), {}, view="bench")
    return fps


def resolve_child(folder: Path, fps_file: Path, view: Path) -> None:
    """In a child process: index the store and write a view of every row; print time and peak RSS."""
    from pipeline.features.store import FeatureStore
    from pipeline.features.view import SplitManifest, base_attrs, write_view

    fps = fps_file.read_text().split()
    started = time.perf_counter()
    store = FeatureStore(folder)
    index = store.index()
    indexed = time.perf_counter() - started
    # A view orders rows by path, not by when they were computed: shuffle.
    order = np.random.default_rng(1).permutation(len(fps))
    manifest = SplitManifest(tuple(f"img/{i}.jpg" for i in order), tuple(int(i % 2) for i in order),
                             tuple(fps[i] for i in order))
    key = {"synthetic": True}
    write_view(view, {"train": manifest}, index, {}, base_attrs(key, ["a", "b"], folder, {}), folder)
    total = time.perf_counter() - started
    print(json.dumps({"index_s": round(indexed, 3), "resolve_s": round(total, 3), "peak_rss_mb": peak_mb()}))


def virtual_view(path: Path, store: Path, fps: list[str], order: np.ndarray, dim: int) -> None:
    """The same rows as a virtual dataset over the segments: one mapping per run of rows."""
    import h5py

    from pipeline.features.store import FeatureStore

    index = FeatureStore(store).index()
    at = index.locate(np.asarray([fps[i] for i in order], dtype="S32"))
    seg, row = index.segment[at], index.row[at]
    layout = h5py.VirtualLayout(shape=(len(order), dim), dtype="float32")
    sources = {}
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and seg[stop] == seg[start] and row[stop] == row[stop - 1] + 1:
            stop += 1
        s = int(seg[start])
        if s not in sources:
            with h5py.File(index.segments[s], "r") as h5:
                sources[s] = h5py.VirtualSource(h5["features"])
        layout[start:stop] = sources[s][int(row[start]):int(row[start]) + stop - start]
        start = stop
    with h5py.File(path, "w") as h5:
        h5.create_virtual_dataset("train/features", layout)


def read_speed(work: Path, fps: list[str], rows: int, dim: int) -> None:
    import h5py

    from pipeline.features import FeatureCache

    view = work / "view.h5"
    t = []
    for _ in range(3):
        started = time.perf_counter()
        FeatureCache(view).load("train")
        t.append(time.perf_counter() - started)
    print(f"materialised view: load('train') {min(t):.3f} s ({rows / min(t):,.0f} rows/s), "
          f"{view.stat().st_size / 1e6:.1f} MB on disk (the store: "
          f"{sum(p.stat().st_size for p in (work / 'store').glob('*.h5')) / 1e6:.1f} MB)")
    cases = {"store order": np.arange(rows),
             "shuffled": np.random.default_rng(1).permutation(rows)}
    for name, order in cases.items():
        path = work / f"virtual-{name.replace(' ', '-')}.h5"
        started = time.perf_counter()
        virtual_view(path, work / "store", fps, order, dim)
        built = time.perf_counter() - started
        t = []
        for _ in range(3):
            started = time.perf_counter()
            with h5py.File(path, "r") as h5:
                h5["train/features"][()]
            t.append(time.perf_counter() - started)
        print(f"virtual view, {name:<11}: built in {built:.2f} s, read {min(t):.3f} s "
              f"({rows / min(t):,.0f} rows/s), {path.stat().st_size / 1e6:.2f} MB on disk")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the real photos (part 1 is skipped without)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--resolve-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--one-process", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_process:
        in_one_process(*(Path(p) for p in args.one_process))
        return 0
    if args.resolve_child:
        resolve_child(*(Path(p) for p in args.resolve_child))
        return 0
    print(f"CPU: {cpu_line()}")
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    if args.data:
        real_photos(Path(args.data), work)
        growing_store(Path(args.data), work)
        # In a child: a parent holding TensorFlow would lend its resident size to the next
        # child's peak (Linux keeps the high-water mark across fork and exec).
        print(subprocess.run([sys.executable, __file__, "--one-process", args.data, str(work)],
                             check=True, capture_output=True, text=True).stdout, end="")
    started = time.perf_counter()
    fps = synthetic_store(work / "store", args.rows, args.dim, args.chunk_size)
    print(f"synthetic store: {args.rows:,} rows x {args.dim} float32 in "
          f"{-(-args.rows // args.chunk_size)} segments, written in {time.perf_counter() - started:.1f} s")
    (work / "fps.txt").write_text("\n".join(fps))
    out = subprocess.run([sys.executable, __file__, "--resolve-child", str(work / "store"),
                          str(work / "fps.txt"), str(work / "view.h5")],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    print(f"resolve a {args.rows:,}-row view: index {r['index_s']} s, index + view written "
          f"{r['resolve_s']} s, peak RSS {r['peak_rss_mb']} MB (child process, imports included)")
    read_speed(work, fps, args.rows, args.dim)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
