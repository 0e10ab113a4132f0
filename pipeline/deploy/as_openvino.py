"""The OpenVINO IR format (``.xml`` and ``.bin``), run by OpenVINO's CPU plugin.

OpenVINO runs bf16 by default on a CPU that has it; the check, and whoever
wants predict's numbers, compiles with :data:`CONFIG`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compose import quiet_conversion

FILE = "{name}.xml"
LIBRARY = "openvino"
CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
LOAD = ('import openvino as ov\ncompiled = ov.Core().compile_model("{file}", "CPU", '
        f"{CONFIG})\nprobabilities = compiled(pixels)[0]")


def save(model, target: Path, quantize: str = "none", representative=None) -> None:
    import openvino as ov

    if not isinstance(model, ov.Model):  # an int8 run's network is OpenVINO's already
        with quiet_conversion():
            model = ov.convert_model(model)
    ov.save_model(model, target, compress_to_fp16=False)


def run(target: Path, pixels: np.ndarray) -> np.ndarray:
    """The written model's probabilities, compiled with :data:`CONFIG`."""
    return run_at(target, pixels, CONFIG)[0]


def run_at(target: Path, pixels: np.ndarray, config: dict, batch: int = 32) -> tuple[np.ndarray, str]:
    """Probabilities of the IR compiled with ``config``, and the precision it ran at."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(target), "CPU", config)
    got = np.concatenate([compiled(pixels[i:i + batch])[0] for i in range(0, len(pixels), batch)])
    return got, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def default_precision() -> str:
    """The precision OpenVINO's CPU plugin runs at when not told (bf16 where the CPU has it)."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
