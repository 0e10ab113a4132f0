"""int8 stage 1 beside float32: the forward pass, the extraction, the limit, the features and
the accuracy, in one run, alternated round by round.

Each round extracts the photos into two fresh cache folders, float32 then int8
(the int8 one converts and quantizes first: those seconds are printed apart
from the loop's), times each kept model's forward pass alone (OpenVINO, the
best of its configurations), the plain reader alone and the plain Keras loop,
and gives each extraction's share of its own two-core limit,
1 / (1 / decode + 1 / forward). Then the features' relative L2 distance and a
logistic regression's validation accuracy under each precision.

``--forward-only mobilenet_v2,efficientnet_b0,resnet50`` measures instead
each backbone's forward pass alone, with random weights (speed does not
depend on their values), at its own input size: Keras (TensorFlow) against
OpenVINO float32 against OpenVINO int8, quantized on the photos given.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_int8.py --data ../shared/data/cats_and_dogs_filtered --rounds 3
    python benchmarks/bench_int8.py --data ../shared/data/cats_and_dogs_filtered \
        --forward-only mobilenet_v2,efficientnet_b0,resnet50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench_extract import all_paths, decoded_pixels, keras_loop, plain_decode, probe_accuracy, runtime_forward
from _cpu import cpu_line  # this folder is on sys.path when the script runs

from pipeline import ExtractConfig, FeatureCache, backbones, extract_features  # noqa: E402  (path set by bench_extract)
from pipeline.features import engines  # noqa: E402


def keras_forward(engine, pixels: np.ndarray, batch: int) -> float:
    """Images/s of the Keras forward pass alone, on in-memory batches (warm)."""
    import time

    batches = [pixels[i:i + batch] for i in range(0, len(pixels) - batch + 1, batch)]
    engine.forward(batches[0]).numpy()
    started = time.perf_counter()
    for x in batches:
        engine.forward(x).numpy()
    return len(batches) * batch / (time.perf_counter() - started)


def forward_only(args, names: list[str]) -> None:
    """Each backbone's forward pass alone, random weights: Keras, OpenVINO float32 and int8."""
    from pipeline.features.quantize import kept_path

    import openvino as ov

    batch = ExtractConfig().batch_size
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            spec = backbones.resolve(name, weights="none")
            pixels = decoded_pixels(args.data, spec.image_size, args.forward_images).numpy()
            folder = Path(tmp) / name
            folder.mkdir()
            calibration = lambda: (pixels, [str(i) for i in range(len(pixels))])  # noqa: E731
            engines.OpenVINOEngine(spec, 0, batch, folder, "int8", calibration)
            keras = keras_forward(engines.KerasEngine(spec, seed=0), pixels, batch)
            f32, _ = runtime_forward(engines.kept_model(folder), pixels, batch)
            int8, _ = runtime_forward(kept_path(ov, folder), pixels, batch)
            print(f"{name} @{spec.image_size}: Keras {keras:.0f}, OpenVINO f32 {f32:.0f}, int8 {int8:.0f} "
                  f"images/s; int8 / f32 {int8 / f32:.2f}, int8 / Keras {int8 / keras:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forward-images", type=int, default=384)
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--forward-only", metavar="BACKBONES", help="comma-separated backbones")
    args = parser.parse_args()
    import openvino as ov

    flags = open("/proc/cpuinfo").read().split()
    print(f"CPU: {cpu_line()}; " + " ".join(f"{f} {'yes' if f in flags else 'no'}"
                                             for f in ("avx512_vnni", "avx_vnni", "amx_int8")))
    print("OpenVINO's CPU capabilities: " + ", ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    if args.forward_only:
        return forward_only(args, args.forward_only.split(","))
    settings = {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
                "engine": "openvino"}  # float32 on OpenVINO however few the photos: its kept model is timed
    spec = backbones.resolve(args.backbone, image_size=args.image_size, weights=args.weights)
    size, batch = spec.image_size, ExtractConfig().batch_size
    keras_engine = engines.KerasEngine(spec, seed=0)
    pixels = decoded_pixels(args.data, size, args.forward_images).numpy()
    paths = all_paths(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            r = {"decode": plain_decode(paths, size, batch), "keras": keras_loop(keras_engine, args.data, size, batch)}
            for precision in ("float32", "int8"):
                result = extract_features(args.data, ExtractConfig(**settings, cache_dir=f"{tmp}/{precision}{k}",
                                                                   precision=precision), progress=False)
                store = result.path.parent / FeatureCache(result.path).store
                xml = next(store.glob("openvino-*-int8/model.xml" if precision == "int8" else "openvino-*[0-9]/model.xml"))
                forward, _ = runtime_forward(xml, pixels, batch)
                r[precision] = {"loop": result.images_per_second, "seconds": result.seconds, "forward": forward,
                                "limit": 1 / (1 / r["decode"] + 1 / forward), "cache": result.path}
            rows.append(r)
            f, q = r["float32"], r["int8"]
            print(f"round {k + 1}: decode {r['decode']:.0f}, plain Keras loop {r['keras']:.0f} images/s; "
                  f"forward f32 {f['forward']:.0f}, int8 {q['forward']:.0f} ({q['forward'] / f['forward']:.2f}x); "
                  f"extraction f32 {f['loop']:.0f} ({f['loop'] / f['limit']:.2f} of its limit {f['limit']:.0f}), "
                  f"int8 {q['loop']:.0f} ({q['loop'] / q['limit']:.2f} of {q['limit']:.0f}); int8 / f32 "
                  f"{q['loop'] / f['loop']:.2f}, int8 / Keras loop {q['loop'] / r['keras']:.2f}; whole calls "
                  f"{f['seconds']:.1f} s and {q['seconds']:.1f} s (int8's with its quantization)", flush=True)
        med = statistics.median
        print(f"medians: int8 / f32 extraction {med(r['int8']['loop'] / r['float32']['loop'] for r in rows):.2f}, "
              f"int8 / Keras loop {med(r['int8']['loop'] / r['keras'] for r in rows):.2f}, int8 / its limit "
              f"{med(r['int8']['loop'] / r['int8']['limit'] for r in rows):.2f}, f32 / its limit "
              f"{med(r['float32']['loop'] / r['float32']['limit'] for r in rows):.2f}")
        a, acc_f32 = probe_accuracy(rows[0]["float32"]["cache"])
        b, acc_int8 = probe_accuracy(rows[0]["int8"]["cache"])
        distance = np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
        print(f"features, int8 against f32 (validation): relative L2 median {np.median(distance):.3f}, "
              f"max {distance.max():.3f}; logistic regression validation accuracy f32 {acc_f32:.4f}, "
              f"int8 {acc_int8:.4f}")


if __name__ == "__main__":
    main()
