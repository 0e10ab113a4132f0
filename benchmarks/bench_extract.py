"""Stage 1 throughput per engine, against what two cores can do and the plain Keras loop.

In one run, on MobileNet 0.25 @224 and the same batch size, ``--rounds``
rounds (these machines are noisy: rates swing by +-20 % within a minute),
each measuring side by side:

1. decoding alone: the extraction's tf.data pipeline (read, decode, resize)
   over every image, nothing computed (images/s);
2. the forward pass alone per engine (Keras/TensorFlow, OpenVINO f32) on
   in-memory, already decoded batches, before and after the extractions;
3. the two-core limit: ``1 / (1/decode + 1/fastest forward)``, what a loop
   reaches if decoding and inference share the cores perfectly;
4. our extraction per engine into a fresh cache (``images_per_second``:
   the loop alone, as ``extract --json`` reports it);
5. the plain Keras loop: ``keras.utils.image_dataset_from_directory`` of each
   split into the Keras forward pass, what users write by hand;

then the medians of the ratios (extraction / limit, extraction / plain
loop), a cache-hit rerun through the command line, peak memory for 1000 and
3000 images, and the large-photo case (the images re-encoded with a 2000 px
long side, where decoding dominates): decoding alone, and extraction with
``--decode full`` and ``--decode auto``.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_extract.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline import ExtractConfig, extract_features  # noqa: E402
from pipeline import backbones  # noqa: E402
from pipeline.data import discover  # noqa: E402
from pipeline.features import engines  # noqa: E402

PEAK_RSS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {root!r})
from pipeline import ExtractConfig, extract_features
extract_features({data!r}, ExtractConfig(cache_dir={cache!r}, batch_size={batch}), progress=False)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024)
"""


def decoded_pixels(data: Path, size: int, n: int):
    """n training images, decoded and resized once, held in memory."""
    import tensorflow as tf

    from pipeline.data.decode import Decoding, load_image

    paths = [str(data / p) for p, _ in discover(data).splits["train"][:n]]
    return tf.stack([load_image(p, Decoding(size)) for p in paths])


def forward_alone(engine, pixels, batch: int) -> float:
    """Images/s of an engine's forward pass on in-memory batches."""
    n = int(pixels.shape[0])
    batches = [(np.arange(i, min(i + batch, n)), pixels[i:i + batch]) for i in range(0, n, batch)]
    list(engine.map(batches[:2]))  # warm
    started = time.perf_counter()
    for _ in range(2):
        for _ in engine.map(batches):
            pass
    return 2 * n / (time.perf_counter() - started)


def all_paths(data: Path) -> list[str]:
    return [str(data / p) for split in discover(data).splits.values() for p, _ in split]


def decode_alone(paths: list[str], size: int, batch: int, mode: str = "auto") -> float:
    """Images/s of the extraction's decoding pipeline, nothing computed."""
    from pipeline.data.decode import Decoding, image_batches

    started = time.perf_counter()
    for _ in image_batches(paths, range(len(paths)), Decoding(size, mode), batch):
        pass
    return len(paths) / (time.perf_counter() - started)


def keras_loop(engine, data: Path, size: int, batch: int) -> float:
    """``image_dataset_from_directory`` of each split feeding the Keras forward pass."""
    import keras

    started, n = time.perf_counter(), 0
    for split in discover(data).splits:
        folder = data / split if (data / split).is_dir() else data / "val"
        images = keras.utils.image_dataset_from_directory(
            folder, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False)
        for pixels, _ in images:
            engine.forward(pixels).numpy()
            n += int(pixels.shape[0])
    return n / (time.perf_counter() - started)


def subset(data: Path, n: int, into: Path) -> Path:
    """A dataset of the first n images (by split order), as symbolic links."""
    ds = discover(data)
    items = [p for split in ds.splits.values() for p, _ in split]
    step = max(1, len(items) // n)
    for rel in items[::step][:n]:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(data / rel)
    return into


def peak_rss_mb(data: Path, batch: int, tmp: Path) -> int:
    code = PEAK_RSS.format(root=str(ROOT), data=str(data), cache=str(tmp / "rss-cache"), batch=batch)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def large_copies(data: Path, n: int, into: Path, side: int = 2000) -> Path:
    import tensorflow as tf

    ds = discover(data)
    for rel, _ in ds.splits["train"][:: max(1, len(ds.splits["train"]) // n)][:n]:
        image = tf.io.decode_jpeg(tf.io.read_file(str(data / rel)))
        h, w = image.shape[:2]
        scale = side / max(h, w)
        big = tf.cast(tf.image.resize(image, (round(h * scale), round(w * scale))), tf.uint8)
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tf.io.encode_jpeg(big, quality=90).numpy())
    return into


def median(values) -> float:
    return statistics.median(values)


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--forward-images", type=int, default=320)
    parser.add_argument("--large-images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = args.batch_size
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                         text=True).stdout.strip()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; mobilenet alpha 0.25 @224, batch {batch}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = backbones.resolve()
        keras_engine = engines.KerasEngine(spec, seed=0)
        (tmp / "ov").mkdir()
        ov_engine = engines.OpenVINOEngine(spec, 0, batch, tmp / "ov")
        print(f"OpenVINO conversion (once per feature spec): {ov_engine.conversion_seconds:.1f} s")
        size = spec.image_size
        pixels = decoded_pixels(args.data, size, args.forward_images)
        paths = all_paths(args.data)
        rows = []
        for round_ in range(args.rounds):
            r = {"decode": decode_alone(paths, size, batch),
                 "fwd_keras": forward_alone(keras_engine, pixels, batch),
                 "fwd_ov": forward_alone(ov_engine, pixels, batch)}
            for name in ("openvino", "keras"):
                config = ExtractConfig(cache_dir=str(tmp / f"cache-{name}{round_}"), batch_size=batch,
                                       engine=name)
                result = extract_features(args.data, config, progress=False)
                r[f"ours_{name}"] = result.images_per_second
            r["plain"] = keras_loop(keras_engine, args.data, size, batch)
            r["fwd_keras"] = (r["fwd_keras"] + forward_alone(keras_engine, pixels, batch)) / 2
            r["fwd_ov"] = (r["fwd_ov"] + forward_alone(ov_engine, pixels, batch)) / 2
            r["limit"] = 1 / (1 / r["decode"] + 1 / max(r["fwd_ov"], r["fwd_keras"]))
            rows.append(r)
            print(f"round {round_ + 1}: decode alone {r['decode']:.0f}; forward alone keras "
                  f"{r['fwd_keras']:.0f}, openvino {r['fwd_ov']:.0f}; two-core limit {r['limit']:.0f}; "
                  f"extraction openvino {r['ours_openvino']:.0f}, keras {r['ours_keras']:.0f}; "
                  f"plain Keras loop {r['plain']:.0f} images/s; ratios openvino/limit "
                  f"{r['ours_openvino'] / r['limit']:.2f}, openvino/plain {r['ours_openvino'] / r['plain']:.2f}, "
                  f"keras/plain {r['ours_keras'] / r['plain']:.2f}", flush=True)
        n = len(paths)
        print(f"medians over {args.rounds} rounds, {n} images (images/s):")
        for label, key in (("decode alone", "decode"), ("forward alone, keras", "fwd_keras"),
                           ("forward alone, openvino f32", "fwd_ov"), ("two-core limit", "limit"),
                           ("extraction, openvino", "ours_openvino"), ("extraction, keras", "ours_keras"),
                           ("plain Keras loop", "plain")):
            print(f"  {label:<28} {median(r[key] for r in rows):7.0f}")
        print(f"  extraction openvino / two-core limit:   "
              f"{median(r['ours_openvino'] / r['limit'] for r in rows):.2f}")
        print(f"  extraction openvino / plain Keras loop: "
              f"{median(r['ours_openvino'] / r['plain'] for r in rows):.2f}")
        print(f"  extraction keras / plain Keras loop:    "
              f"{median(r['ours_keras'] / r['plain'] for r in rows):.2f}")

        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data",
                        str(args.data), "--cache-dir", str(tmp / "cache-openvino0"), "--json"],
                       check=True, capture_output=True)
        print(f"cache-hit rerun (CLI):    {time.perf_counter() - started:7.2f} s")

        for count in (1000, 3000):
            small = subset(args.data, count, tmp / f"subset{count}")
            print(f"peak RSS, {count:>4} images:   {peak_rss_mb(small, batch, tmp / str(count)):7d} MB")

        big = large_copies(args.data, args.large_images, tmp / "large")
        size_kb = sum(p.stat().st_size for p in big.rglob("*.jpg")) / args.large_images / 1024
        big_paths = all_paths(big)
        print(f"large photos (2000 px, {size_kb:.0f} KB avg, {args.large_images} images), images/s:")
        for mode in ("full", "auto"):
            decode = decode_alone(big_paths, size, batch, mode)
            cfg = ExtractConfig(cache_dir=str(tmp / f"large-{mode}"), batch_size=batch, decode=mode,
                                engine="openvino")
            rate = extract_features(big, cfg, progress=False).images_per_second
            limit = 1 / (1 / decode + 1 / rows[-1]["fwd_ov"])
            print(f"  --decode {mode}: decode alone {decode:6.1f}, extraction (openvino) {rate:6.1f}, "
                  f"limit {limit:6.1f}, ratio {rate / limit:.2f}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
