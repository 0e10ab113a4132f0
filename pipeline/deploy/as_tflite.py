"""The TFLite format (float, or int8 calibrated on training images), checked with LiteRT.

The check runs :mod:`.litert_run` in a child process: a model the runtime
cannot execute may abort it (a C++ assertion), which must not take the
command down.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import RunError

FILE = "{name}{suffix}.tflite"
LIBRARY = "ai-edge-litert"
LOAD = ("from ai_edge_litert.interpreter import Interpreter\n"
        'interpreter = Interpreter(model_path="{file}")\n'
        'index = interpreter.get_input_details()[0]["index"]\n'
        "interpreter.resize_tensor_input(index, pixels.shape)\n"
        "interpreter.allocate_tensors()\n"
        "interpreter.set_tensor(index, pixels)\n"
        "interpreter.invoke()\n"
        'probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])')


def save(model, target: Path, quantize: str = "none", representative: np.ndarray | None = None) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as staging:
        model.export(staging, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(staging)
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([row[None]] for row in representative)
        target.write_bytes(converter.convert())


def run(target: Path, pixels: np.ndarray) -> np.ndarray:
    """The written file's probabilities, through the LiteRT interpreter in a child process.

    Raises:
        RunError: the interpreter could not run it.
    """
    folder = target.parent
    given, got = folder / "check-pixels.npy", folder / "check-out.npy"
    np.save(given, pixels.astype("float32"))
    done = subprocess.run([sys.executable, "-m", "pipeline.deploy.litert_run", str(target), str(given),
                           str(got)], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    try:
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise RunError(f"The LiteRT interpreter could not run the exported {target.name} ({last}); "
                           "nothing was written.")
        return np.load(got)
    finally:
        for path in (given, got):
            path.unlink(missing_ok=True)
