"""What the checksums cost: raw read rates with and without Fletcher-32, and the
checks' share of whole ``extract`` (a cache hit) and ``compare`` commands.

    python benchmarks/bench_checksums.py --data ../shared/data/cats_and_dogs_filtered

The commands run as a user runs them; the checks inside them (the view's
metadata digest, reading every row against its checksum on a hit, Fletcher-32
on the rows compare reads) are timed alone on the same files, so each ratio
comes from one run on one machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.features import checked  # noqa: E402
from pipeline.features.view import FeatureCache  # noqa: E402


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_rates(folder: Path, rows: int = 100_000, width: int = 256) -> dict[str, float]:
    data = np.random.default_rng(0).normal(size=(rows, width)).astype("float32")
    rates = {}
    for name, fletcher in (("plain", False), ("fletcher32", True)):
        path = folder / f"{name}.h5"
        with h5py.File(path, "w", libver=checked.LIBVER) as h5:
            h5.create_dataset("x", data=data, chunks=(checked.CHUNK_ROWS, width), fletcher32=fletcher)
        with h5py.File(path, "r") as h5:
            h5["x"][()]  # into the page cache
            rates[name] = rows / best(lambda: h5["x"][()])
    return rates


def command(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rates = raw_rates(tmp)
        print(f"raw read, 100000 x 256 float32 in {checked.CHUNK_ROWS}-row chunks, page cache: "
              f"{rates['plain'] / 1e6:.2f} M rows/s plain, {rates['fletcher32'] / 1e6:.2f} M rows/s "
              f"with Fletcher-32 ({(1 / rates['fletcher32'] - 1 / rates['plain']) * 1e8:.1f} ms more "
              "per 100000 rows)")
        cache_dir = args.cache_dir or str(tmp / "cache")
        extract = ["extract", "--data", args.data, "--alpha", "0.25", "--image-size", "224",
                   "--cache-dir", cache_dir, "--no-progress"]
        command(extract)  # computes the view once
        view = next(Path(cache_dir).glob("*.h5"))
        cache = FeatureCache(view)
        hit = min(command(extract) for _ in range(3))
        opening = best(lambda: FeatureCache(view))
        verifying = best(cache.verify)
        print(f"extract, cache hit, whole command: {hit:.2f} s; opening the view (metadata digest "
              f"included) {opening * 1e3:.1f} ms, reading every row against its checksum "
              f"{verifying * 1e3:.1f} ms = {verifying / hit:.1%} of the command")
        run = tmp / "run"
        compare = ["compare", "--features", str(view), "--out", str(run), "--overwrite"]
        whole = min(command(compare) for _ in range(2))
        loads = best(lambda: [cache.load(s) for s in cache.splits])
        with h5py.File(view, "r") as h5:
            plain = {s: h5[s]["features"][()] for s in cache.splits}  # the same bytes, unchecked
            dtype = plain[cache.splits[0]].dtype
        with h5py.File(tmp / "plain.h5", "w") as h5:
            for s, x in plain.items():
                h5.create_dataset(s, data=x, chunks=(min(len(x), checked.CHUNK_ROWS), *x.shape[1:]))
        with h5py.File(tmp / "plain.h5", "r") as h5:
            unchecked = best(lambda: [h5[s][()] for s in cache.splits])
        extra = max(loads - unchecked, 0.0) + opening
        print(f"compare, whole command: {whole:.2f} s; its checked reads take {loads * 1e3:.1f} ms "
              f"against {unchecked * 1e3:.1f} ms unchecked ({dtype}); with the view's opening, "
              f"checks cost {extra * 1e3:.1f} ms = {extra / whole:.2%} of the command")
    print(f"CPU: {cpu_line()}")


if __name__ == "__main__":
    main()
