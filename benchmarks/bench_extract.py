"""Stage 1 throughput: extraction against the backbone's forward pass alone.

In one run, on the same backbone and batch size:

1. the forward pass alone on in-memory, already decoded tensors (images/s),
   measured right before and right after each extraction and averaged;
2. the full extraction of the dataset (read, decode, resize, forward, chunk
   store segment writes, the view file) into a fresh cache, and its ratio to (1); three
   rounds, each ratio printed, and their median (these machines are noisy:
   the forward pass alone swings by +-20 % within a minute);
   Beside it, on the training split: the least any extraction can do, a
   bare loop of the same decoding pipeline into the forward pass with
   nothing kept, and the plain ``keras.utils.image_dataset_from_directory``
   loop into the same forward pass (the usual way, the baseline);
3. the CPU budget: CPU time per image of decoding and resizing (one thread)
   and of the forward pass, and the ceiling they set on the ratio (2)
   on this machine's cores even if both shared them perfectly;
4. the peak resident memory of a whole extraction of 1000 and of 3000 images,
   each in its own process;
5. the wall time of a cache-hit rerun through the command line;
6. large photos (the same images re-encoded with a 2000 px long side):
   extraction with ``--decode full`` and ``--decode auto``.

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

from pipeline import ExtractConfig, extract_features  # noqa: E402
from pipeline import backbones  # noqa: E402
from pipeline.data import discover  # noqa: E402

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

    from pipeline.decode import load_image

    paths = [str(data / p) for p, _ in discover(data).splits["train"][:n]]
    return tf.stack([load_image(tf.constant(p), size) for p in paths])


def forward_alone(forward, pixels, batch: int) -> tuple[float, float]:
    """Images/s of the forward pass on in-memory tensors, and its CPU ms per image."""
    n = int(pixels.shape[0])
    forward(pixels[:batch]).numpy()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(2):
        for i in range(0, n, batch):
            forward(pixels[i:i + batch]).numpy()
    return 2 * n / (time.perf_counter() - started), (time.process_time() - cpu) / (2 * n) * 1e3


def fed_rate(forward, batches) -> float:
    """Images/s of a loop feeding each batch of pixels to the forward pass, nothing kept."""
    started, n = time.perf_counter(), 0
    for pixels in batches:
        forward(pixels).numpy()
        n += int(pixels.shape[0])
    return n / (time.perf_counter() - started)


def bare_loop(forward, data: Path, size: int, batch: int) -> float:
    """The extraction's own decoding pipeline feeding the forward pass."""
    from pipeline.decode import image_batches

    paths = [str(data / p) for p, _ in discover(data).splits["train"]]
    return fed_rate(forward, (images for _, images in
                              image_batches(paths, range(len(paths)), size, "auto", batch)))


def keras_loop(forward, data: Path, size: int, batch: int) -> float:
    """``image_dataset_from_directory`` feeding the forward pass."""
    import keras

    images = keras.utils.image_dataset_from_directory(
        data / "train", image_size=(size, size), batch_size=batch, shuffle=False, verbose=False)
    return fed_rate(forward, (pixels for pixels, _ in images))


def decode_cpu_ms(data: Path, size: int, batch: int) -> float:
    """CPU milliseconds per image of decoding + resizing on one thread (bytes in memory)."""
    import tensorflow as tf

    from pipeline.decode import decode_image

    paths = [str(data / p) for p, _ in discover(data).splits["train"][:400]]
    contents = tf.constant([Path(p).read_bytes() for p in paths])  # no disk time
    decoded = (tf.data.Dataset.from_tensor_slices(contents)
               .map(lambda c: decode_image(c, size), num_parallel_calls=1).batch(batch))
    started = time.process_time()
    for _ in decoded:
        pass
    return (time.process_time() - started) / len(paths) * 1e3


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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = backbones.build(backbones.resolve())
        forward_fn = backbones.compiled_forward(model)
        pixels = decoded_pixels(args.data, model.input_shape[1], args.forward_images)
        loop_ratios, e2e_ratios, bare_ratios, keras_ratios = [], [], [], []
        for round_ in range(args.rounds):
            config = ExtractConfig(cache_dir=str(tmp / f"cache{round_}"), batch_size=batch)
            before = forward_alone(forward_fn, pixels, batch)[0]
            result = extract_features(args.data, config, progress=False)
            bare = bare_loop(forward_fn, args.data, model.input_shape[1], batch)
            plain = keras_loop(forward_fn, args.data, model.input_shape[1], batch)
            after = forward_alone(forward_fn, pixels, batch)[0]
            forward = (before + after) / 2
            n = sum(result.splits.values())
            loop_ratios.append(result.images_per_second / forward)
            e2e_ratios.append(n / result.seconds / forward)
            bare_ratios.append(bare / forward)
            keras_ratios.append(plain / forward)
            print(f"round {round_ + 1}: forward alone {forward:6.1f} images/s (before {before:.1f}, "
                  f"after {after:.1f}); extraction loop {result.images_per_second:6.1f} images/s, "
                  f"end to end {n / result.seconds:6.1f} images/s ({result.seconds:.1f} s), "
                  f"bare loop {bare:6.1f}, image_dataset_from_directory loop {plain:6.1f} images/s; "
                  f"ratios {loop_ratios[-1]:.2f} / {e2e_ratios[-1]:.2f} / {bare_ratios[-1]:.2f} / "
                  f"{keras_ratios[-1]:.2f}", flush=True)
        print(f"backbone: mobilenet alpha 0.25 @224, batch {batch}, {n} images, {os.cpu_count()} cores")
        print(f"median ratio, extraction loop / forward alone:  {statistics.median(loop_ratios):.2f} "
              "(read, decode, resize, forward, chunk writes)")
        print(f"median ratio, end to end / forward alone:       {statistics.median(e2e_ratios):.2f} "
              "(also fingerprints, model build, HDF5 assembly)")
        print(f"median ratio, bare loop / forward alone:        {statistics.median(bare_ratios):.2f} "
              "(decoding pipeline into the forward pass, nothing kept)")
        print(f"median ratio, image_dataset_from_directory / forward alone: "
              f"{statistics.median(keras_ratios):.2f} (the plain Keras loop)")

        decode_ms = decode_cpu_ms(args.data, model.input_shape[1], batch)
        forward, forward_ms = forward_alone(forward_fn, pixels, batch)
        cores = os.cpu_count() or 1
        ceiling = min(1.0, cores / ((decode_ms + forward_ms) / 1e3) / forward)
        print(f"CPU per image: decode + resize {decode_ms:.2f} ms (one thread), forward "
              f"{forward_ms:.2f} ms ({forward_ms * forward / 1e3:.2f} of {cores} cores busy at "
              f"{forward:.0f} images/s); ceiling of the ratio with perfect sharing: {ceiling:.2f}")

        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data",
                        str(args.data), "--cache-dir", str(tmp / "cache0"), "--json"],
                       check=True, capture_output=True)
        print(f"cache-hit rerun (CLI):    {time.perf_counter() - started:7.2f} s")

        for count in (1000, 3000):
            small = subset(args.data, count, tmp / f"subset{count}")
            print(f"peak RSS, {count:>4} images:   {peak_rss_mb(small, batch, tmp / str(count)):7d} MB")

        big = large_copies(args.data, args.large_images, tmp / "large")
        size_kb = sum(p.stat().st_size for p in big.rglob("*.jpg")) / args.large_images / 1024
        rates = {}
        for mode in ("full", "auto"):
            cfg = ExtractConfig(cache_dir=str(tmp / f"large-{mode}"), batch_size=batch, decode=mode)
            rates[mode] = extract_features(big, cfg, progress=False).images_per_second
        print(f"large photos (2000 px, {size_kb:.0f} KB avg, {args.large_images} images):")
        print(f"  --decode full:          {rates['full']:7.1f} images/s")
        print(f"  --decode auto:          {rates['auto']:7.1f} images/s "
              f"({rates['auto'] / rates['full']:.2f}x)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
