"""What each export format weighs and how fast it runs, for one run's model.

In one run:

1. a run on the real photos (``extract`` + ``compare --classifiers
   logreg,dense``) into a fresh folder, unless ``--run`` names one;
2. ``export`` of the chosen model in every format (Keras, SavedModel, TFLite,
   TFLite int8, OpenVINO IR), each checked against ``predict`` by the
   command itself (its probability difference and accuracy change printed);
3. each format run by its own runtime on the same validation images:
   single images (latency, median ms) and batches of 32 (images per
   second), after a warm-up; the pixels are decoded once, beforehand.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_export.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FORMATS = (("keras", "none"), ("savedmodel", "none"), ("tflite", "none"), ("tflite", "int8"),
           ("openvino", "none"))


def command(*args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args], capture_output=True,
                          text=True, env=env)
    if done.returncode:
        sys.exit(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def runner(fmt: str, path: Path):
    """A function: pixels (n, s, s, 3) -> probabilities, through the format's own runtime."""
    if fmt == "keras":
        import keras

        model = keras.saving.load_model(path)
        return lambda x: np.asarray(model.predict_on_batch(x))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: compiled(x)[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(index, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def timings(run, pixels: np.ndarray) -> tuple[float, float]:
    """(median ms for one image, images per second in batches of 32)."""
    run(pixels[:1])
    run(pixels[:32])  # warm-up of both shapes
    single = []
    for i in range(64):
        start = time.perf_counter()
        run(pixels[i:i + 1])
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(0, len(pixels) - 31, 32):
        run(pixels[i:i + 32])
    batched = (len(pixels) // 32 * 32) / (time.perf_counter() - start)
    return statistics.median(single), batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the cats_and_dogs_filtered folder (without --run)")
    parser.add_argument("--run", type=Path, help="an existing run folder")
    parser.add_argument("--model", default="dense")
    parser.add_argument("--images", type=int, default=256, help="validation images to time on")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    run = args.run
    if run is None:
        if args.data is None:
            sys.exit("pass --data (the photos) or --run (a run folder)")
        extract = json.loads(command("extract", "--data", str(args.data), "--backbone", "mobilenet",
                                     "--alpha", "0.25", "--cache-dir", str(work / "cache"), "--json",
                                     "--no-progress"))
        command("compare", "--features", extract["cache"], "--classifiers", "logreg,dense",
                "--out", str(work / "run"))
        run = work / "run"

    from pipeline.deploy import check
    from pipeline.runs.run import Run

    opened = Run.open(run)
    paths, _ = check.images(opened, "validation", args.images, None)
    size = opened.key["image_size"]
    pixels = check.pixels(paths, opened.key, size).astype("float32")
    print(f"model {args.model} of {run}; {len(pixels)} validation images at {size} px; CPU {cpu_line()}")
    print(f"{'format':<16} {'size MiB':>8} {'max |dp|':>9} {'acc change':>10} {'1 image ms':>10} "
          f"{'img/s @32':>9}")
    for fmt, quantize in FORMATS:
        record = json.loads(command("export", "--run", str(run), "--model", args.model, "--format", fmt,
                                    "--quantize", quantize, "--out", str(work / "export"), "--json"))
        latency, throughput = timings(runner(fmt, work / "export" / record["file"]), pixels)
        label = fmt + (" int8" if quantize == "int8" else "")
        check = record["check"]
        print(f"{label:<16} {record['bytes'] / 2**20:>8.2f} {check['max_abs_difference']:>9.2g} "
              f"{check['accuracy']['change']:>+10.3f} {latency:>10.2f} {throughput:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
