"""Run a TFLite file on pixels with the LiteRT interpreter, alone in its process.

    python -m pipeline.deploy.litert_run MODEL.tflite PIXELS.npy OUT.npy

Imports only numpy and LiteRT, so a crash of the interpreter ends this
process and nothing else (see :mod:`.as_tflite`).
"""

from __future__ import annotations

import sys

import numpy as np


def main(model: str, given: str, out: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    pixels = np.load(given)
    interpreter = Interpreter(model_path=model)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(pixels.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, pixels)
    interpreter.invoke()
    np.save(out, interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


if __name__ == "__main__":
    main(*sys.argv[1:4])
