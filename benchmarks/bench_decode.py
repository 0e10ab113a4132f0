"""What reading each image's header first costs the decoding pipeline.

Every image's header is probed with Pillow before it is decoded (pixel
budget, EXIF orientation, which decoder), in tf.data's generator thread.
This measures, in one process and alternating rounds, the extraction's
decoding pipeline (:func:`pipeline.data.decode.image_batches`) against the
same pipeline with the probe left out (paths straight into TensorFlow's
decoders, as before the probe existed), and the probe alone.

Usage (the real photos are in ../shared):

    python benchmarks/bench_decode.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

from pipeline.data import discover  # noqa: E402
from pipeline.data.decode import Decoding, _load, image_batches, probe  # noqa: E402


def without_probe(paths: list[str], decoding: Decoding, batch: int) -> tf.data.Dataset:
    """The same decoders, parallelism and prefetch, every image taken as an upright JPEG/PNG."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths))
    ds = ds.map(lambda p: _load(p, tf.constant(1), tf.constant(False), decoding),
                num_parallel_calls=len(os.sched_getaffinity(0)), deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.ignore_errors().batch(batch).prefetch(2).with_options(options)


def rate(dataset, n: int) -> float:
    started = time.perf_counter()
    for _ in dataset:
        pass
    return n / (time.perf_counter() - started)


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = [str(args.data / p) for split in discover(args.data).splits.values() for p, _ in split]
    decoding = Decoding(args.size)
    rate(without_probe(paths[:200], decoding, args.batch_size), 200)  # warm both
    rate(image_batches(paths[:200], range(200), decoding, args.batch_size), 200)
    ratios = []
    for r in range(1, args.rounds + 1):
        plain = rate(without_probe(paths, decoding, args.batch_size), len(paths))
        probed = rate(image_batches(paths, range(len(paths)), decoding, args.batch_size), len(paths))
        started = time.perf_counter()
        for p in paths:
            probe(p, decoding)
        alone = len(paths) / (time.perf_counter() - started)
        ratios.append(probed / plain)
        print(f"round {r}: decoding {len(paths)} images without the probe {plain:.0f}, with it "
              f"{probed:.0f} images/s (ratio {probed / plain:.2f}); the probe alone {alone:.0f} images/s")
    print(f"median ratio with / without the probe: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
