"""Stage 1 throughput against an honest two-core limit, and where its time goes.

In one run, on MobileNet 0.25 @224, ``--rounds`` rounds (these machines are
noisy: rates swing by +-20 % within a minute), each measuring side by side:

1. plain decoding: what ``keras.utils.image_dataset_from_directory`` does
   (``read_file``, ``decode_image``, bilinear ``resize`` in a ``tf.data`` map
   with autotuned parallelism), nothing of ours, nothing computed (images/s),
   with glibc keeping freed memory as the extraction has it (every measure
   here runs under that setting, so the limit is the plain reader at its best);
   the same map with one thread per core and autotuning off is measured too,
   and the faster of the two counts (the autotuner at times settles on half
   the rate, which would lower the limit);
2. the runtime's best forward pass: OpenVINO f32 in each configuration of
   ``RUNTIME_CONFIGS`` (one stream or THROUGHPUT's several, threads pinned
   or not), at least two requests kept in flight, on in-memory batches of
   16, 32 and 64, without our engine (the best of them counts);
3. the two-core limit: ``1 / (1/plain decode + 1/best forward)``, what a loop
   reaches if decoding and inference share the cores perfectly;
4. our extraction into a fresh cache (``images_per_second``: the loop alone,
   as ``extract --json`` reports it), with the default settings;
5. plain decoding (1.) feeding our OpenVINO engine, nothing else of ours and
   nothing stored: what the simplest loop of these two parts reaches on
   this CPU;
6. the plain Keras loop: ``image_dataset_from_directory`` of each split into
   the Keras forward pass, what users write by hand;

then the medians of the ratios (extraction / limit, extraction / plain
loop) and where the extraction's time goes per image, each part measured
alone on one thread (reading the bytes, fingerprinting them, probing the
header, TensorFlow's JPEG decoding and its resize, writing the store), beside
our whole decoding and the forward pass on every core. Where OpenVINO
lists BF16, the same for ``--precision bf16``: its forward pass, its limit,
its extraction, and how far its features and a logistic regression's
validation accuracy move from f32's. ``--bf16-emulated`` runs those on a CPU
with AVX-512 but no bf16 units too, where OpenVINO emulates bf16 (the
extraction's refusal is lifted for this process only): the figures then
check the loop and this script, not what bf16 units give. Then a cache-hit rerun through the
command line, peak memory for 1000 and 3000 images, and the large-photo
case (the images re-encoded with a 2000 px long side, where decoding
dominates): ``--decode full`` against ``--decode auto``.

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
from collections import deque
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs
from bench_decoders import decodable, tf_rate

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline import ExtractConfig, extract_features  # noqa: E402
from pipeline import backbones  # noqa: E402
from pipeline.data import allocator, discover  # noqa: E402
from pipeline.features import engines  # noqa: E402

PEAK_RSS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path[:0] = [{root!r}, {here!r}]
from pipeline import ExtractConfig, extract_features
from _peak import peak_mb
extract_features({data!r}, ExtractConfig(cache_dir={cache!r}, batch_size={batch}), progress=False)
print(peak_mb())
"""


def decoded_pixels(data: Path, size: int, n: int):
    """n training images, decoded and resized once, held in memory."""
    import tensorflow as tf

    from pipeline.data.decode import Decoding, load_image

    paths = [str(data / p) for p, _ in discover(data).splits["train"][:n]]
    return tf.stack([load_image(p, Decoding(size)) for p in paths])


def all_paths(data: Path) -> list[str]:
    """The photos of every split that decode (the plain readers would stop at any other)."""
    return list(decodable(data / p for split in discover(data).splits.values() for p, _ in split))


def plain_reader(paths: list[str], size: int, batch: int, fixed: bool = False):
    """image_dataset_from_directory's reader: read, decode, resize, autotuned; batches of
    ``(indices, images)``. ``fixed``: one thread per core instead, autotuning off."""
    import tensorflow as tf

    def load(i, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return i, tf.image.resize(image, (size, size), method="bilinear")

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    if not fixed:
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.map(load, num_parallel_calls=len(os.sched_getaffinity(0))).batch(batch).prefetch(2)
    return ds.with_options(options)


def plain_decode(paths: list[str], size: int, batch: int) -> float:
    """Images/s of the plain reader alone, autotuned or with one thread per core: the faster."""
    rates = []
    for fixed in (False, True):
        started = time.perf_counter()
        for _ in plain_reader(paths, size, batch, fixed):
            pass
        rates.append(len(paths) / (time.perf_counter() - started))
    return max(rates)


def plain_into_engine(engine, paths: list[str], size: int, batch: int) -> float:
    """Images/s of the plain reader feeding our OpenVINO engine: nothing else of ours, nothing stored."""
    started = time.perf_counter()
    for _ in engine.map((i.numpy(), x) for i, x in plain_reader(paths, size, batch)):
        pass
    return len(paths) / (time.perf_counter() - started)


def our_decode(paths: list[str], size: int, batch: int, mode: str = "auto") -> float:
    """Images/s of the extraction's own pipeline alone: read once, hash, probe, decode, resize."""
    from pipeline.data.decode import Decoding, image_batches

    started = time.perf_counter()
    for _ in image_batches(paths, range(len(paths)), Decoding(size, mode), batch):
        pass
    return len(paths) / (time.perf_counter() - started)


# What the runtime can be asked for: one stream over all cores or THROUGHPUT's several, with
# OpenVINO's own thread pinning and without it (as the engine runs). The best of them counts.
RUNTIME_CONFIGS = {f"{hint.lower()}{'' if pinned else ', unpinned'}":
                   {"PERFORMANCE_HINT": hint, **({} if pinned else {"ENABLE_CPU_PINNING": False})}
                   for hint in ("LATENCY", "THROUGHPUT") for pinned in (True, False)}


def runtime_forward(xml: Path, pixels: np.ndarray, batch: int, precision: str = "f32") -> tuple[float, str]:
    """Images/s of OpenVINO alone, the best of :data:`RUNTIME_CONFIGS`, each with at least two
    requests (and as many as it asks for) in flight; and which config that was."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml)
    size = pixels.shape[1]
    model.reshape({model.inputs[0].get_any_name(): [batch, size, size, 3]})
    inputs = [pixels[i:i + batch] for i in range(0, len(pixels) - batch + 1, batch)]
    rates = {}
    for name, config in RUNTIME_CONFIGS.items():
        compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
        requests = [compiled.create_infer_request() for _ in range(
            max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))]

        def run(rounds: int) -> int:
            free, busy = deque(requests), deque()
            for _ in range(rounds):
                for x in inputs:
                    if not free:
                        busy[0].wait()
                        free.append(busy.popleft())
                    request = free.popleft()
                    request.start_async({0: x})
                    busy.append(request)
            for request in busy:
                request.wait()
            return rounds * len(inputs) * batch

        run(1)  # warm
        started = time.perf_counter()
        n = run(3)
        rates[name] = n / (time.perf_counter() - started)
    best = max(rates, key=rates.get)
    return rates[best], best


def per_image_ms(paths: list[str], size: int, batch: int, store_folder: Path) -> dict[str, float]:
    """Milliseconds per image of each step of the extraction, each alone on one thread."""
    import h5py  # noqa: F401 - imported before timing

    from pipeline.data.decode import Decoding, probe
    from pipeline.data.files import MAX_FILE_BYTES, fingerprint_bytes, read_bytes
    from pipeline.features.store import FeatureStore

    decoding, n, out = Decoding(size), len(paths), {}
    started = time.perf_counter()
    data = [read_bytes(p, MAX_FILE_BYTES) for p in paths]
    out["read the bytes"] = (time.perf_counter() - started) / n * 1e3
    started = time.perf_counter()
    fingerprints = [fingerprint_bytes(d) for d in data]
    out["fingerprint them"] = (time.perf_counter() - started) / n * 1e3
    started = time.perf_counter()
    for d in data:
        probe(d, decoding)
    out["probe the header"] = (time.perf_counter() - started) / n * 1e3
    decode_ms = out["decode the JPEG (TensorFlow)"] = 1e3 / tf_rate(data, None, 1)
    out[f"resize it to {size} px (TensorFlow)"] = 1e3 / tf_rate(data, size, 1) - decode_ms
    store = FeatureStore.create(store_folder, {"bench": True})
    features = np.random.default_rng(0).random((n, 256), dtype=np.float32)
    started = time.perf_counter()
    for i in range(0, n, 512):
        store.write_segment(fingerprints[i:i + 512], features[i:i + 512], {}, view="bench")
    out["write the store"] = (time.perf_counter() - started) / n * 1e3
    return out


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


def child_output(code: str, what: str) -> str:
    """The last line a fresh Python process running ``code`` prints; its stderr if it fails."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{what} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def peak_rss_mb(data: Path, batch: int, tmp: Path) -> int:
    code = PEAK_RSS.format(root=str(ROOT), here=str(Path(__file__).parent), data=str(data),
                           cache=str(tmp / "rss-cache"), batch=batch)
    return int(child_output(code, f"the peak-memory extraction of {data}"))


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


def probe_accuracy(cache_path: Path) -> tuple[np.ndarray, float]:
    """The validation rows of a cache, and a logistic regression's validation accuracy on them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline import FeatureCache

    cache = FeatureCache(cache_path)
    train, validation = cache.load("train"), cache.load("validation")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(train.features, train.labels)
    order = np.argsort(validation.paths)
    return validation.features[order], float(model.score(validation.features, validation.labels))


def bf16_trade(args, tmp: Path, xml: Path, pixels: np.ndarray, rows: list[dict], f32_cache: Path,
               units: bool) -> None:
    """bf16's forward pass, limit and extraction, and what it moves in the features and accuracy."""
    batches = {b: runtime_forward(xml, pixels, b, "bf16")[0] for b in (16, 32, 64)}
    forward = max(batches.values())
    decode = median(r["plain_decode"] for r in rows)
    limit = 1 / (1 / decode + 1 / forward)
    config = ExtractConfig(cache_dir=str(tmp / "cache-bf16"), batch_size=args.batch_size, precision="bf16")
    result = extract_features(args.data, config, progress=False)
    f32_rows, f32_accuracy = probe_accuracy(f32_cache)
    bf16_rows, bf16_accuracy = probe_accuracy(result.path)
    relative = np.linalg.norm(bf16_rows - f32_rows, axis=1) / np.linalg.norm(f32_rows, axis=1)
    print("bf16 (OpenVINO lists BF16 on this CPU):" if units else
          "bf16, EMULATED (OpenVINO lists no BF16 here; --bf16-emulated): the loop's figures, not bf16's speed:")
    print("  forward alone, batch 16/32/64: " + ", ".join(f"{v:.0f}" for v in batches.values()))
    print(f"  two-core limit {limit:.0f}; extraction {result.images_per_second:.0f} images/s = "
          f"{result.images_per_second / limit:.2f} of it")
    print(f"  features against f32: relative L2 median {np.median(relative):.3f}, max {relative.max():.3f}")
    print(f"  logistic regression validation accuracy: bf16 {bf16_accuracy:.4f}, f32 {f32_accuracy:.4f}")


def main() -> None:
    shared = os.environ.get("PIPELINE_SHARED_DIR", str(ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(shared) / "data" / "cats_and_dogs_filtered")
    parser.add_argument("--batch-size", type=int, default=ExtractConfig().batch_size)
    parser.add_argument("--forward-images", type=int, default=384)
    parser.add_argument("--large-images", type=int, default=200, help="0 leaves the large-photo case out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16-emulated", action="store_true",
                        help="run the bf16 part where OpenVINO lists no BF16 (it emulates it on AVX-512)")
    args = parser.parse_args()
    batch = args.batch_size
    units = engines.cpu_has_bf16()
    if args.bf16_emulated and not units:
        engines.cpu_has_bf16 = lambda: True  # lifts the extraction's refusal, in this process only
    allocator.keep_freed_memory()
    print(f"CPU: {cpu_line()}; bf16 in OpenVINO: "
          f"{units}; mobilenet alpha 0.25 @224, extraction batch {batch}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = backbones.resolve()
        keras_engine = engines.KerasEngine(spec, seed=0)
        (tmp / "ov").mkdir()
        ov_engine = engines.OpenVINOEngine(spec, 0, batch, tmp / "ov")
        print(f"OpenVINO conversion (once per feature spec): {ov_engine.conversion_seconds:.1f} s")
        xml = engines.kept_model(tmp / "ov")
        size = spec.image_size
        pixels = decoded_pixels(args.data, size, args.forward_images).numpy()
        paths = all_paths(args.data)
        rows = []
        for round_ in range(args.rounds):
            r = {"plain_decode": plain_decode(paths, size, batch), "our_decode": our_decode(paths, size, batch)}
            for b in (16, 32, 64):
                r[f"fwd{b}"], r[f"fwd{b}_config"] = runtime_forward(xml, pixels, b)
            config = ExtractConfig(cache_dir=str(tmp / f"cache{round_}"), batch_size=batch)
            result = extract_features(args.data, config, progress=False)
            r["ours"], r["cache"] = result.images_per_second, result.path
            r["plain_ov"] = plain_into_engine(ov_engine, paths, size, batch)
            r["plain"] = keras_loop(keras_engine, args.data, size, batch)
            r["forward"] = max(r[f"fwd{b}"] for b in (16, 32, 64))
            r["limit"] = 1 / (1 / r["plain_decode"] + 1 / r["forward"])
            rows.append(r)
            print(f"round {round_ + 1}: plain decode {r['plain_decode']:.0f}, ours {r['our_decode']:.0f}; "
                  f"OpenVINO forward batch 16/32/64 {r['fwd16']:.0f}/{r['fwd32']:.0f}/{r['fwd64']:.0f} "
                  f"({r['fwd16_config']}/{r['fwd32_config']}/{r['fwd64_config']}); "
                  f"limit {r['limit']:.0f}; extraction {r['ours']:.0f}; plain decoding into our engine "
                  f"{r['plain_ov']:.0f}; plain Keras loop {r['plain']:.0f} "
                  f"images/s; extraction/limit {r['ours'] / r['limit']:.2f}, /plain loop "
                  f"{r['ours'] / r['plain']:.2f}", flush=True)
        n = len(paths)
        print(f"medians over {args.rounds} rounds, {n} images (images/s):")
        for label, key in (("plain decode alone", "plain_decode"), ("our decode alone", "our_decode"),
                           ("OpenVINO forward, batch 16", "fwd16"), ("OpenVINO forward, batch 32", "fwd32"),
                           ("OpenVINO forward, batch 64", "fwd64"), ("two-core limit", "limit"),
                           ("extraction", "ours"), ("plain decoding into our engine", "plain_ov"),
                           ("plain Keras loop", "plain")):
            print(f"  {label:<32} {median(r[key] for r in rows):7.0f}")
        print(f"  extraction / two-core limit:   {median(r['ours'] / r['limit'] for r in rows):.2f}")
        print(f"  extraction / plain Keras loop: {median(r['ours'] / r['plain'] for r in rows):.2f}")
        print(f"  plain decoding into our engine / two-core limit: "
              f"{median(r['plain_ov'] / r['limit'] for r in rows):.2f}")

        print("where an image's time goes (ms per image; each step alone):")
        steps = per_image_ms(paths, size, batch, tmp / "store")
        steps["decode (ours, 2 threads)"] = 1e3 / median(r["our_decode"] for r in rows)
        steps["forward pass (OpenVINO, best batch)"] = 1e3 / median(r["forward"] for r in rows)
        for label, ms in steps.items():
            print(f"  {label:<36} {ms:6.3f}")
        print(f"  the loop, as extraction ran it     {1e3 / median(r['ours'] for r in rows):6.3f}")

        if units or args.bf16_emulated:
            bf16_trade(args, tmp, xml, pixels, rows, rows[0]["cache"], units)
        else:
            print("bf16: OpenVINO lists no BF16 on this CPU, so --precision bf16 is refused here")

        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "extract", "--data",
                        str(args.data), "--cache-dir", str(tmp / "cache0"), "--json"],
                       check=True, capture_output=True)
        print(f"cache-hit rerun (the whole command): {time.perf_counter() - started:5.2f} s")
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--help"], check=True,
                       capture_output=True)
        print(f"--help (the whole command):          {time.perf_counter() - started:5.2f} s")

        for count in (1000, 3000):
            small = subset(args.data, count, tmp / f"subset{count}")
            print(f"peak RSS, {count:>4} images:   {peak_rss_mb(small, batch, tmp / str(count)):7d} MB")

        if args.large_images:
            large_photos(args, tmp, size, batch, rows[-1]["forward"])
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


def large_photos(args, tmp: Path, size: int, batch: int, forward: float) -> None:
    """The large-photo case: extraction against the limit its own decoding sets, per decode mode.

    The limit's forward pass is OpenVINO's, so the extraction runs on OpenVINO too: in a fresh
    cache, ``--engine auto`` would pick Keras for fewer than ``AUTO_MIN_IMAGES`` images.
    """
    big = large_copies(args.data, args.large_images, tmp / "large")
    size_kb = sum(p.stat().st_size for p in big.rglob("*.jpg")) / args.large_images / 1024
    big_paths = all_paths(big)
    print(f"large photos (2000 px, {size_kb:.0f} KB avg, {args.large_images} images, OpenVINO), images/s:")
    for mode in ("full", "auto"):
        decode = our_decode(big_paths, size, batch, mode)
        cfg = ExtractConfig(cache_dir=str(tmp / f"large-{mode}"), batch_size=batch, decode=mode,
                            engine="openvino")
        rate = extract_features(big, cfg, progress=False).images_per_second
        limit = 1 / (1 / decode + 1 / forward)
        print(f"  --decode {mode}: our decode alone {decode:6.1f}, extraction {rate:6.1f}, "
              f"limit with it {limit:6.1f}, ratio {rate / limit:.2f}")


if __name__ == "__main__":
    from pipeline.console import native_logs_filtered

    with native_logs_filtered():
        main()
