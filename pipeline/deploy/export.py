"""Export a run's model where it will run: Keras, SavedModel, TFLite (float or int8), OpenVINO IR.

Every format takes float32 pixels, 0-255, NHWC at the run's size, and
returns probabilities over all the run's classes (:mod:`.compose`). A
scikit-learn classifier goes in when it is linear (logistic regression; the
calibrated linear SVM, its folds' sigmoids and all), as the few Keras layers
that compute exactly its ``predict_proba`` (:mod:`pipeline.heads.linear`).
Before anything is written, the export runs on the run's validation images
and is compared with ``predict``: the largest probability difference (and,
for int8, the accuracy change) goes into ``export.json`` and the output; a
float export that differs by more than :data:`TOLERANCE` is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..config import ExportConfig, PredictConfig
from ..console import quiet
from ..errors import ConfigError, RunError
from ..predict import predict
from ..runs import export_folder
from ..runs.run import Run
from . import as_keras, as_openvino, as_savedmodel, as_tflite, check
from .compose import ImageClassifier

log = logging.getLogger(__name__)

TOLERANCE = 2e-3  # largest probability difference a float export may show against predict
RUNTIMES = {"keras": as_keras, "savedmodel": as_savedmodel, "tflite": as_tflite, "openvino": as_openvino}


def keras_files(run: str | os.PathLike, model: str, out: str | os.PathLike,
                weights: str | None = None) -> dict[str, str]:
    """``predict --export``: the pixels-in model as ``.keras`` and a SavedModel, unchecked."""
    out = Path(out)
    classifier = ImageClassifier.of(Run.open(run), model, weights)
    export_folder.check(out)
    network = classifier.keras_model()
    name = classifier.name
    keras_name, saved_name = as_keras.FILE.format(name=name), as_savedmodel.FILE.format(name=name)
    with export_folder.staged(out) as staging:
        as_keras.save(network, staging / keras_name)
        as_savedmodel.save(network, staging / saved_name)
        export_folder.publish(out, staging, f"{name} (predict --export)",
                              {"model": name, "format": "keras+savedmodel", "file": keras_name,
                               "check": None})
    return {"keras": str(out / keras_name), "saved_model": str(out / saved_name)}


@quiet
def export(run: str | os.PathLike, config: ExportConfig | None = None) -> dict:
    """Write one model of a run in one format, checked against ``predict`` first.

    Returns:
        What ``export.json`` records for this format.

    Raises:
        ConfigError: a classifier that cannot be exported (the settings check the rest).
        RunError: the export differs from ``predict`` by more than
            :data:`TOLERANCE` (float formats), or the check images are missing.
    """
    config = config or ExportConfig()
    out = Path(config.out)
    export_folder.check(out)  # before any work: an --out of the user's is refused at once
    opened = Run.open(run)
    name = opened.name(config.model)
    if opened.precision == "int8" and config.format != "openvino":
        raise ConfigError(f"`--format {config.format}` would carry float32 weights, not the int8 "
                          "network this run's features came from. Fix: `--format openvino`.")
    classifier = ImageClassifier.of(opened, name, config.weights)
    if opened.precision == "int8":
        network = classifier.int8_network()
        size = network.get_parameters()[0].get_partial_shape()[1].get_length()
    else:
        network = classifier.keras_model()
        size = network.input_shape[1]
    paths, labels = check.images(opened, "validation", config.images, config.data)
    pixels = check.pixels(paths, opened.key, size)
    reference = predict(opened.path, paths, PredictConfig(model=name, weights=config.weights))
    by_path = {row["path"]: row for row in reference.rows}
    expected = np.array([[by_path[p]["probabilities"][c] for c in opened.classes] for p in paths])
    calibration = None
    if config.quantize == "int8":
        train, _ = check.images(opened, "train", config.representative, config.data)
        calibration = check.pixels(train, opened.key, size)
    runtime = RUNTIMES[config.format]
    file_name = runtime.FILE.format(name=name, suffix="_int8" if config.quantize == "int8" else "")
    with export_folder.staged(out) as staging:
        target = staging / file_name
        runtime.save(network, target, config.quantize, calibration)
        checked = _checked(config, name, target, pixels, expected, labels)
        record = {"model": name, "format": config.format, "quantize": config.quantize, "file": file_name,
                  "bytes": _size(target), "input": f"float32 pixels 0-255, shape [n, {size}, {size}, 3]",
                  "output": {"probabilities over": opened.classes},
                  "runtime": _runtime(config.format, file_name), "check": checked}
        record = export_folder.publish(out, staging, file_name, record)
    log.info("exported %s as %s: %s", name, config.format, out / file_name)
    return record


def _checked(config: ExportConfig, name: str, target: Path, pixels: np.ndarray, expected: np.ndarray,
             labels) -> dict:
    """The written file run on the check images and compared with predict's probabilities.

    Raises:
        RunError: a float export differs from predict by more than :data:`TOLERANCE`.
    """
    got = RUNTIMES[config.format].run(target, pixels)
    result = {"images": len(pixels), **check.compared(got, expected, labels),
              "tolerance": None if config.quantize == "int8" else TOLERANCE}
    if config.quantize == "none" and result["max_abs_difference"] > TOLERANCE:
        raise RunError(f"The {config.format} export of {name} differs from predict by up to "
                       f"{result['max_abs_difference']:.3g} in probability on {len(pixels)} validation "
                       f"images (tolerance {TOLERANCE:g}); nothing was written.")
    if config.format == "openvino" and as_openvino.default_precision() != "f32":  # a plain compile's
        got, precision = as_openvino.run_at(target, pixels, {})
        result["runtime_default"] = {"precision": precision, **check.compared(got, expected, labels)}
    return result


def _runtime(fmt: str, file_name: str) -> dict:
    """What runs the export as the check did, for export.json."""
    from importlib.metadata import version

    runtime = RUNTIMES[fmt]
    said = {"library": runtime.LIBRARY, "version": version(runtime.LIBRARY)}
    if fmt == "openvino":
        said.update(device="CPU", compile_config=as_openvino.CONFIG)
    return {**said, "load": runtime.LOAD.replace("{file}", file_name)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    extra = path.with_suffix(".bin")  # OpenVINO's weights beside its .xml
    return path.stat().st_size + (extra.stat().st_size if path.suffix == ".xml" and extra.is_file() else 0)
