"""Where decoding's time goes, and whether a decoder outside TensorFlow would raise the limit.

Stage 1's two-core limit is set by decoding (decode, then the bilinear resize
to the backbone's size) and the forward pass. On the real photos, held in
memory (no file reading counted), this measures:

1. on one thread, per image: TensorFlow's JPEG decoding alone, and decoding
   and resizing (the difference is the resize), in a ``tf.data`` map;
2. where they are installed (they are not dependencies; ``pip install
   simplejpeg numba``), the same outside TensorFlow: simplejpeg
   (libjpeg-turbo with TensorFlow's settings, the fast integer DCT and fancy
   upsampling) and a resize compiled with numba that does TensorFlow's
   arithmetic; first checked, image by image, to give TensorFlow's pixels
   bit for bit, since the features must not change;
3. with one thread per core, rounds alternated: TensorFlow's decoding and
   resizing in a parallel ``tf.data`` map (the plain reader) against a thread
   pool running (2), both giving batches of 32.

Usage (the real photos are in ../shared):

    python benchmarks/bench_decoders.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _cpu import cpu_line  # noqa: E402 - this folder is on sys.path when the script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.files import MAX_FILE_BYTES, Refused, read_bytes  # noqa: E402

BATCH = 32


def decodable(paths) -> dict[str, bytes]:
    """Each photo TensorFlow's JPEG decoder takes, by path, with its bytes. Any other file (not a
    regular file, unreadable, not a JPEG, damaged) is named, with why, and left out of every
    measure, as the extraction would quarantine it."""
    kept = {}
    for path in map(str, paths):
        try:
            data = read_bytes(path, MAX_FILE_BYTES)
            tf.io.decode_jpeg(data, channels=3)
        except (Refused, OSError) as exc:
            print(f"left out {path}: {exc}")
        except tf.errors.OpError as exc:
            print(f"left out {path}: {(exc.message or type(exc).__name__).splitlines()[0]}")
        else:
            kept[path] = data
    return kept


def tf_rate(data: list[bytes], size: int | None, threads: int) -> float:
    """Images/s of TensorFlow's decoding (and resizing, unless ``size`` is None) in a tf.data map."""
    def load(contents):
        image = tf.io.decode_jpeg(contents, channels=3)
        return tf.shape(image) if size is None else tf.image.resize(image, (size, size), method="bilinear")

    options = tf.data.Options()
    options.autotune.enabled = False
    ds = tf.data.Dataset.from_tensor_slices(data).map(load, num_parallel_calls=threads)
    ds = ds.batch(BATCH).prefetch(2).with_options(options)
    started = time.perf_counter()
    for _ in ds:
        pass
    return len(data) / (time.perf_counter() - started)


def outside_tf(size: int):
    """(decode, resize) outside TensorFlow, or the reason they cannot be measured here."""
    try:
        import numba
        import simplejpeg
    except ImportError as exc:
        return f"not measured: {exc.name} is not installed (pip install simplejpeg numba)"

    def decode(data: bytes) -> np.ndarray:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)

    @numba.njit(nogil=True)
    def lerp(image, ylo, yhi, ylerp, xlo, xhi, xlerp, out):
        # TensorFlow's ResizeBilinear: along x in the two rows, then along y, in float32.
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                for c in range(3):
                    tl, tr = np.float32(image[ylo[i], xlo[j], c]), np.float32(image[ylo[i], xhi[j], c])
                    bl, br = np.float32(image[yhi[i], xlo[j], c]), np.float32(image[yhi[i], xhi[j], c])
                    top = tl + (tr - tl) * xlerp[j]
                    bottom = bl + (br - bl) * xlerp[j]
                    out[i, j, c] = top + (bottom - top) * ylerp[i]

    def weights(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Half-pixel centres: source coordinate (i + 0.5) * in/out - 0.5, clamped to the image.
        x = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * (np.float32(n_in) / np.float32(size))
        x -= np.float32(0.5)
        floor = np.floor(x)
        return (np.maximum(floor, 0).astype(np.intp), np.minimum(np.ceil(x), n_in - 1).astype(np.intp),
                (x - floor).astype(np.float32))

    def resize(image: np.ndarray) -> np.ndarray:
        out = np.empty((size, size, 3), np.float32)
        lerp(image, *weights(image.shape[0]), *weights(image.shape[1]), out)
        return out

    resize(np.zeros((2, 2, 3), np.uint8))  # compiled here, not in the first measure
    return decode, resize


def pool_rate(data: list[bytes], decode, resize, threads: int) -> float:
    """Images/s of a thread pool decoding and resizing, stacked in batches as tf.data gives them."""
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        images = pool.map(lambda d: resize(decode(d)), data, chunksize=16)
        for start in range(0, len(data), BATCH):
            np.stack([next(images) for _ in range(min(BATCH, len(data) - start))])
        return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = list(decodable(sorted(args.data.rglob("*.jpg"))).values())
    threads = len(os.sched_getaffinity(0))
    print(f"CPU: {cpu_line()}; {len(data)} JPEGs held in memory, resized to {args.size} px")

    decode_ms = statistics.median(1e3 / tf_rate(data, None, 1) for _ in range(3))
    both_ms = statistics.median(1e3 / tf_rate(data, args.size, 1) for _ in range(3))
    print(f"TensorFlow, one thread (ms per image): decode {decode_ms:.3f}, decode and resize {both_ms:.3f}, "
          f"so the resize {both_ms - decode_ms:.3f}")

    found = outside_tf(args.size)
    if isinstance(found, str):
        print(f"simplejpeg and numba: {found}")
        return
    decode, resize = found
    mismatched = sum(not np.array_equal(resize(decode(d)), tf.image.resize(
        tf.io.decode_jpeg(d, channels=3), (args.size, args.size)).numpy()) for d in data)
    print(f"simplejpeg + numba against TensorFlow: {mismatched} of {len(data)} images differ in any pixel")
    started = time.perf_counter()
    pixels = [decode(d) for d in data]
    decoded = time.perf_counter()
    for image in pixels:
        resize(image)
    done = time.perf_counter()
    print(f"simplejpeg + numba, one thread (ms per image): decode {(decoded - started) / len(data) * 1e3:.3f}, "
          f"resize {(done - decoded) / len(data) * 1e3:.3f}")

    ours, theirs = [], []
    for round_ in range(args.rounds):
        ours.append(tf_rate(data, args.size, threads))
        theirs.append(pool_rate(data, decode, resize, threads))
        print(f"round {round_ + 1}, {threads} threads (images/s): TensorFlow tf.data {ours[-1]:.0f}, "
              f"simplejpeg + numba pool {theirs[-1]:.0f}", flush=True)
    print(f"medians: TensorFlow {statistics.median(ours):.0f}, simplejpeg + numba {statistics.median(theirs):.0f}; "
          f"ratio per round {', '.join(f'{b / a:.2f}' for a, b in zip(ours, theirs))}")


if __name__ == "__main__":
    main()
