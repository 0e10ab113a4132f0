"""What each part of the extraction's decoding pipeline costs against the plain reader.

In one process, rounds alternated, over the photos at ``--size`` px, batches
of ``--batch-size``, one decoding thread per core and tf.data's autotuning off
in every variant (images/s):

1. plain: ``read_file``, ``decode_image`` and the bilinear resize in a
   parallel ``tf.data`` map, nothing of ours (``bench_extract.py``'s plain
   reader, with one thread per core);
2. our reader: :func:`pipeline.data.decode.image_batches` (each file read
   once on a Python thread, its header probed, the bytes handed to tf.data a
   block at a time) into a bare ``decode_jpeg`` and resize, so what differs
   from (1) is the reading;
3. ours: ``image_batches`` as the extraction runs it, with its decoders (the
   route switch, the orientation condition), so what differs from (2) is the
   per-image control flow.

And the header probe alone, on bytes in memory.

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
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402
from _cpu import cpu_line  # noqa: E402 - this folder is on sys.path when the script runs
from bench_decoders import decodable  # noqa: E402
from bench_extract import plain_reader  # noqa: E402

from pipeline.data import decode, discover  # noqa: E402


def ours(paths: list[str], size: int, batch: int, bare: bool = False) -> tf.data.Dataset:
    """The extraction's pipeline; ``bare``: its decoders swapped for one ``decode_jpeg`` and resize."""
    def load(contents, orientation, route, decoding):
        return tf.image.resize(tf.io.decode_jpeg(contents, channels=3), (decoding.size, decoding.size))

    def pipeline():  # tf.data traces the map function here, so the swap holds for the whole run
        return decode.image_batches(paths, range(len(paths)), decode.Decoding(size), batch)

    if not bare:
        return pipeline()
    with mock.patch.object(decode, "_load", load):
        return pipeline()


def rate(dataset: tf.data.Dataset, n: int) -> float:
    started = time.perf_counter()
    for _ in dataset:
        pass
    return n / (time.perf_counter() - started)


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    photos = decodable(args.data / p for split in discover(args.data).splits.values() for p, _ in split)
    paths, data = list(photos), list(photos.values())
    n, size, batch = len(paths), args.size, args.batch_size
    print(f"CPU: {cpu_line()}; {n} photos at {size} px, batches of {batch}")
    started = time.perf_counter()
    for d in data:
        decode.probe(d, decode.Decoding(size))
    print(f"the header probe alone, bytes in memory: {n / (time.perf_counter() - started):.0f} images/s")
    variants = {"plain": lambda: plain_reader(paths, size, batch, fixed=True),
                "our reader, bare decoding": lambda: ours(paths, size, batch, bare=True),
                "ours": lambda: ours(paths, size, batch)}
    for make in variants.values():  # traced and warmed once before anything counts
        rate(make(), n)
    rates = {label: [] for label in variants}
    for round_ in range(1, args.rounds + 1):
        for label, make in variants.items():
            rates[label].append(rate(make(), n))
        print(f"round {round_} (images/s): " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()),
              flush=True)
    medians = {label: statistics.median(v) for label, v in rates.items()}
    print("medians (images/s): " + ", ".join(f"{k} {v:.0f}" for k, v in medians.items()))
    reader = [b / a for a, b in zip(rates["plain"], rates["our reader, bare decoding"])]
    switch = [b / a for a, b in zip(rates["our reader, bare decoding"], rates["ours"])]
    whole = [b / a for a, b in zip(rates["plain"], rates["ours"])]
    print(f"median ratios per round: our reader / plain {statistics.median(reader):.2f}, "
          f"our decoders / bare {statistics.median(switch):.2f}, ours / plain {statistics.median(whole):.2f}")


if __name__ == "__main__":
    main()
