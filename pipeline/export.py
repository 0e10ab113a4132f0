"""Export a run's model where it will run: Keras, SavedModel, TFLite (float or int8), OpenVINO IR.

Every format takes float32 pixels, 0-255, NHWC at the run's size, and
returns probabilities over all the run's classes. The stage-2 classifier is
composed with the backbone and its preprocessing; a scikit-learn classifier
goes in when it is linear (logistic regression; the calibrated linear SVM,
its folds' sigmoids and all), as the few Keras layers that compute exactly
its ``predict_proba``. Before anything is written, the export runs on the
run's validation images and is compared with ``predict``: the largest
probability difference (and, for int8, the accuracy change) goes into
``export.json`` and the output; a float export that differs by more than
:data:`TOLERANCE` is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .config import ExportConfig, PredictConfig
from .console import quiet
from .errors import ConfigError, RunError
from .features.extractor import Extractor
from .features.view import FeatureCache
from .heads.vocabulary import spatial_layer
from .predict import model_name, predict
from .runs import export_folder, load_model, read_manifest

log = logging.getLogger(__name__)

TOLERANCE = 2e-3  # largest probability difference a float export may show against predict
FILE_OF = {"keras": "{name}.keras", "savedmodel": "{name}_savedmodel", "tflite": "{name}{suffix}.tflite",
           "openvino": "{name}.xml"}
# OpenVINO runs bf16 by default on a CPU that has it; the check, and whoever
# wants predict's numbers, compiles with this.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
# How each format is loaded to reproduce predict, as export.json records it (its runtime and the lines).
RUNTIME = {
    "keras": ("keras", 'import keras\nmodel = keras.saving.load_model("{file}")\n'
                       "probabilities = model.predict(pixels)"),
    "savedmodel": ("tensorflow", 'import tensorflow as tf\nloaded = tf.saved_model.load("{file}")\n'
                                 "probabilities = loaded.serve(tf.constant(pixels)).numpy()"),
    "tflite": ("ai-edge-litert", "from ai_edge_litert.interpreter import Interpreter\n"
                                 'interpreter = Interpreter(model_path="{file}")\n'
                                 'index = interpreter.get_input_details()[0]["index"]\n'
                                 "interpreter.resize_tensor_input(index, pixels.shape)\n"
                                 "interpreter.allocate_tensors()\n"
                                 "interpreter.set_tensor(index, pixels)\n"
                                 "interpreter.invoke()\n"
                                 'probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])'),
    "openvino": ("openvino", 'import openvino as ov\ncompiled = ov.Core().compile_model("{file}", "CPU", '
                             f"{OPENVINO_CONFIG})\nprobabilities = compiled(pixels)[0]"),
}


def pixels_model(run: str | os.PathLike, name: str, weights: str | None = None):
    """One Keras model of a run's classifier: pixels in, probabilities over all classes out.

    Raises:
        ConfigError: the classifier is a non-linear scikit-learn model.
    """
    manifest = read_manifest(run)
    entry = manifest["models"][name]
    n_classes = len(manifest["classes"])
    loaded = load_model(run, name)
    # A classifier with no exact form as layers is refused before TensorFlow loads.
    head = linear_head(loaded, name, n_classes) if entry["format"] not in ("keras-model", "keras") else None

    import keras

    from .finetune.rebuild import end_to_end

    if entry["format"] == "keras-model":
        # Stage 3's model augments its input while training; its core does not.
        core = loaded.get_layer("core") if "core" in [layer.name for layer in loaded.layers] else loaded
        pixels = keras.Input(core.input_shape[1:], name="pixels")
        return keras.Model(pixels, _all_classes(core(pixels), range(n_classes), n_classes), name=name)
    features = Extractor.from_key(manifest["cache"]["key"], weights).model()
    if entry["format"] == "keras":
        model = end_to_end(features, loaded.model_, f"{name}_end_to_end")
        classes = loaded.classes_ if getattr(loaded, "classes_", None) is not None else range(n_classes)
        pixels = keras.Input(model.input_shape[1:], name="pixels")
        return keras.Model(pixels, _all_classes(model(pixels), classes, n_classes), name=name)
    pixels = keras.Input(features.input_shape[1:], name="pixels")
    return keras.Model(pixels, head(features(pixels)), name=name)


def int8_network(run: str | os.PathLike, name: str, weights: str | None = None):
    """An int8 run's classifier as one OpenVINO model, pixels in: the int8 backbone its features
    came from (kept in the store, checked), with the head's layers appended.

    Raises:
        ConfigError: the int8 model is no longer kept, or the classifier has no form as layers.
    """
    import keras
    import openvino as ov

    from .features import kept
    from .features.quantize import kept_path
    from .features.spec import spec_of, store_folder_name
    from .features.store import store_root

    manifest = read_manifest(run)
    entry, n_classes = manifest["models"][name], len(manifest["classes"])
    loaded = load_model(run, name)
    if entry["format"] == "keras-model":
        raise ConfigError("The fine-tuned model is float32 end to end; an int8 run's int8 network "
                          "serves its stage-2 models. Fix: pass `--model` with one of them.")
    head = linear_head(loaded, name, n_classes) if entry["format"] != "keras" else None
    folder = store_root(Path(manifest["cache"]["path"]).parent) / store_folder_name(spec_of(manifest["cache"]["key"]))
    xml = kept_path(ov, folder)
    backbone = kept.read(ov, xml, "int8 model") if xml.is_file() else None
    if backbone is None:
        raise ConfigError(f"The int8 network of this run is not kept in {folder} (or no longer matches "
                          "its checksums). Fix: run the run's `extract --precision int8` again, then export.")
    features = keras.Input(tuple(d.get_length() for d in list(backbone.output(0).get_partial_shape())[1:]),
                           name="features")
    if head is None:
        classes = loaded.classes_ if getattr(loaded, "classes_", None) is not None else range(n_classes)
        probabilities = _all_classes(loaded.model_(features), classes, n_classes)
    else:
        probabilities = head(features)
    with _quiet_conversion():  # weights copied: the Keras model they come from is dropped on return
        appended = ov.convert_model(keras.Model(features, probabilities, name=f"{name}_head"),
                                    share_weights=False)
    (parameter,) = appended.get_parameters()
    for target in parameter.output(0).get_target_inputs():  # the head reads the backbone's output
        target.replace_source_output(backbone.get_results()[0].input_value(0))
    return ov.Model(appended.get_results(), backbone.get_parameters(), name)


@contextlib.contextmanager
def _quiet_conversion():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # OpenVINO traces with a tuple input
        yield


def _all_classes(proba, classes, n_classes: int):
    """A single sigmoid unit as two columns, and a model's columns placed among all classes."""
    import keras

    if proba.shape[-1] == 1:
        proba = keras.ops.concatenate([1.0 - proba, proba], axis=-1)
    classes = [int(c) for c in classes]
    if classes == list(range(n_classes)):
        return proba
    place = np.zeros((len(classes), n_classes), "float32")
    place[np.arange(len(classes)), classes] = 1.0
    return keras.ops.matmul(proba, place)


def linear_head(estimator, name: str, n_classes: int):
    """A function of Keras tensors computing a linear scikit-learn pipeline's ``predict_proba``.

    Standardisation is folded into the first layer's weights.

    Raises:
        ConfigError: the model is not (vectorise, [standardise], linear classifier).
    """
    from sklearn.linear_model import LogisticRegression

    clf, scale, spatial = _linear_parts(estimator, name)
    import keras

    mean = scale.mean_ if scale is not None and scale.with_mean else 0.0
    std = scale.scale_ if scale is not None and scale.with_std else 1.0

    def dense(coef, intercept, activation, label):
        """x @ coef.T + intercept on standardised x, as one Dense layer on raw x."""
        w = (np.asarray(coef, "float64") / std).T
        b = np.asarray(intercept, "float64") - np.asarray(mean * np.ones(w.shape[0])) @ w
        layer = keras.layers.Dense(w.shape[1], activation=activation, name=label)
        layer.build((None, w.shape[0]))
        layer.set_weights([w.astype("float32"), b.astype("float32")])
        return layer

    def head(features):
        x = spatial_layer(spatial, "vectorize")(features) if len(features.shape) == 4 else features
        if isinstance(clf, LogisticRegression):
            coef, intercept = clf.coef_, clf.intercept_
            if len(coef) == 1:  # binary: softmax([-z/2, z/2]) is [1 - sigmoid(z), sigmoid(z)]
                coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
            return _all_classes(dense(coef, intercept, "softmax", "logistic")(x), clf.classes_, n_classes)
        return _all_classes(_calibrated_linear(clf, x, dense), clf.classes_, n_classes)

    return head


def _linear_parts(estimator, name: str):
    """``(classifier, scaler or None, spatial)`` of a linear pipeline; a sentence for any other model."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    steps = dict(estimator.steps) if isinstance(estimator, Pipeline) else {}
    clf = steps.get("clf")
    calibrated = isinstance(clf, CalibratedClassifierCV) and clf.method == "sigmoid" and all(
        isinstance(c.estimator, (LinearSVC, LogisticRegression)) for c in clf.calibrated_classifiers_)
    scale = steps.get("scale")
    if not (isinstance(clf, LogisticRegression) or calibrated) or \
            set(steps) - {"vectorize", "scale", "clf"} or (scale and not isinstance(scale, StandardScaler)):
        raise ConfigError(
            f"{name} ({type(clf or estimator).__name__}) is not a linear classifier, so it has no exact "
            "form as network layers and cannot be exported. Fix: export logreg, linear_svm, dense or "
            "finetuned, or load its joblib file with pipeline.runs.load_model in Python.")
    return clf, scale, steps["vectorize"].spatial


def _calibrated_linear(clf, x, dense):
    """A sigmoid-calibrated linear model's probabilities: the mean over its folds of
    scikit-learn's ``1 / (1 + exp(a * decision + b))``, per class."""
    import keras

    per_fold = []
    for i, fold in enumerate(clf.calibrated_classifiers_):  # stratified folds: each saw every class
        a = np.array([c.a_ for c in fold.calibrators])
        b = np.array([c.b_ for c in fold.calibrators])
        coef, intercept = fold.estimator.coef_, fold.estimator.intercept_
        p = dense(-a[:, None] * coef, -(a * intercept + b), "sigmoid", f"calibrated_{i}")(x)
        if p.shape[-1] == 1:
            p = keras.ops.concatenate([1.0 - p, p], axis=-1)
        else:
            p = p / keras.ops.sum(p, axis=-1, keepdims=True)
        per_fold.append(p)
    return per_fold[0] if len(per_fold) == 1 else keras.ops.mean(keras.ops.stack(per_fold), axis=0)


def keras_files(run: str | os.PathLike, model: str, out: str | os.PathLike,
                weights: str | None = None) -> dict[str, str]:
    """``predict --export``: the pixels-in model as ``.keras`` and a SavedModel, unchecked."""
    run, out = Path(run), Path(out)
    name = model_name(run, read_manifest(run), model)
    export_folder.check(out)
    network = pixels_model(run, name, weights)
    keras_name, saved_name = f"{name}.keras", f"{name}_savedmodel"
    with export_folder.staged(out) as staging:
        network.save(staging / keras_name)
        network.export(str(staging / saved_name), verbose=False)
        export_folder.publish(out, staging, f"{name} (predict --export)",
                              {"model": name, "format": "keras+savedmodel", "file": keras_name,
                               "check": None})
    return {"keras": str(out / keras_name), "saved_model": str(out / saved_name)}


def _check_images(manifest: dict, split: str, n: int, data: str | None):
    """Up to ``n`` images of a split, evenly spread: (absolute paths, labels)."""
    cache = FeatureCache(manifest["cache"]["path"])
    total = cache.counts.get(split, 0)
    if total == 0:
        raise RunError(f"The run's cache has no {split} images to check the export on. Fix: "
                       "extract with a validation split.")
    rows = np.unique(np.linspace(0, total - 1, min(n, total)).astype(int))
    taken = cache.take(split, rows)
    root = Path(data or cache.data_root)
    paths = [str(root / p) for p in taken.paths]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise RunError(f"{len(missing)} of the {split} images are not where stage 1 read them "
                       f"(first: {missing[0]}). Fix: pass the data folder with `--data`.")
    return paths, np.asarray(taken.labels)


def _pixels(paths: list[str], key: dict, size: int) -> np.ndarray:
    import tensorflow as tf

    from .data.decode import Decoding, load_image

    decoding = Decoding.of_view(key, size)
    return tf.stack([load_image(p, decoding) for p in paths]).numpy()


def _write(model, fmt: str, target: Path, quantize: str, representative: np.ndarray | None) -> None:
    if fmt == "keras":
        model.save(target)
    elif fmt == "savedmodel":
        model.export(str(target), verbose=False)
    elif fmt == "openvino":
        import openvino as ov

        if not isinstance(model, ov.Model):  # an int8 run's network is OpenVINO's already
            with _quiet_conversion():
                model = ov.convert_model(model)
        ov.save_model(model, target, compress_to_fp16=False)
    else:
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as staging:
            model.export(staging, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(staging)
            if quantize == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([row[None]] for row in representative)
            target.write_bytes(converter.convert())


def _run(fmt: str, target: Path, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The written export's probabilities, through its own runtime."""
    if fmt == "keras":
        import keras

        loaded = keras.saving.load_model(target)
        return np.asarray(loaded.predict(pixels, batch_size=batch, verbose=0))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(target))  # held: its functions need its variables alive
        return np.concatenate([loaded.serve(tf.constant(pixels[i:i + batch])).numpy()
                               for i in range(0, len(pixels), batch)])
    if fmt == "openvino":
        return _openvino(target, pixels, OPENVINO_CONFIG)[0]
    return _litert(target, pixels)


def _openvino(target: Path, pixels: np.ndarray, config: dict, batch: int = 32) -> tuple[np.ndarray, str]:
    """Probabilities of the IR compiled with ``config``, and the precision it ran at."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(target), "CPU", config)
    got = np.concatenate([compiled(pixels[i:i + batch])[0] for i in range(0, len(pixels), batch)])
    return got, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def openvino_default_precision() -> str:
    """The precision OpenVINO's CPU plugin runs at when not told (bf16 where the CPU has it)."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def _compared(got: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    """The check's figures: the largest probability difference to predict, and both accuracies."""
    accuracy = {"predict": float((expected.argmax(1) == labels).mean()),
                "export": float((got.argmax(1) == labels).mean())}
    accuracy["change"] = accuracy["export"] - accuracy["predict"]
    return {"max_abs_difference": float(np.abs(got - expected).max()), "accuracy": accuracy}


def _runtime(fmt: str, file_name: str) -> dict:
    """What runs the export as the check did, for export.json."""
    from importlib.metadata import version

    package, lines = RUNTIME[fmt]
    runtime = {"library": package, "version": version(package)}
    if fmt == "openvino":
        runtime.update(device="CPU", compile_config=OPENVINO_CONFIG)
    return {**runtime, "load": lines.replace("{file}", file_name)}


# The LiteRT check runs in a child process: a model the runtime cannot
# execute may abort it (a C++ assertion), which must not take the command down.
_LITERT = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
pixels = np.load(sys.argv[2])
interpreter = Interpreter(model_path=sys.argv[1])
index = interpreter.get_input_details()[0]["index"]
interpreter.resize_tensor_input(index, list(pixels.shape))
interpreter.allocate_tensors()
interpreter.set_tensor(index, pixels)
interpreter.invoke()
np.save(sys.argv[3], interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
"""


def _litert(target: Path, pixels: np.ndarray) -> np.ndarray:
    import subprocess
    import sys

    folder = target.parent
    np.save(folder / "check-pixels.npy", pixels.astype("float32"))
    done = subprocess.run([sys.executable, "-c", _LITERT, str(target), str(folder / "check-pixels.npy"),
                           str(folder / "check-out.npy")], capture_output=True, text=True)
    try:
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise RunError(f"The LiteRT interpreter could not run the exported {target.name} ({last}); "
                           "nothing was written.")
        return np.load(folder / "check-out.npy")
    finally:
        for name in ("check-pixels.npy", "check-out.npy"):
            (folder / name).unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    extra = path.with_suffix(".bin")  # OpenVINO's weights beside its .xml
    return path.stat().st_size + (extra.stat().st_size if path.suffix == ".xml" and extra.is_file() else 0)


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
    run, out = Path(run), Path(config.out)
    export_folder.check(out)  # before any work: an --out of the user's is refused at once
    manifest = read_manifest(run)
    name = model_name(run, manifest, config.model)
    if manifest["cache"]["key"].get("precision") == "int8":
        if config.format != "openvino":
            raise ConfigError(f"`--format {config.format}` would carry float32 weights, not the int8 "
                              "network this run's features came from. Fix: `--format openvino`.")
        network = int8_network(run, name, config.weights)
        size = network.get_parameters()[0].get_partial_shape()[1].get_length()
    else:
        network = pixels_model(run, name, config.weights)
        size = network.input_shape[1]
    paths, labels = _check_images(manifest, "validation", config.images, config.data)
    pixels = _pixels(paths, manifest["cache"]["key"], size)
    reference = predict(run, paths, PredictConfig(model=name, weights=config.weights))
    by_path = {row["path"]: row for row in reference.rows}
    expected = np.array([[by_path[p]["probabilities"][c] for c in manifest["classes"]] for p in paths])
    calibration = None
    if config.quantize == "int8":
        train, _ = _check_images(manifest, "train", config.representative, config.data)
        calibration = _pixels(train, manifest["cache"]["key"], size)
    file_name = FILE_OF[config.format].format(name=name, suffix="_int8" if config.quantize == "int8" else "")
    with export_folder.staged(out) as staging:
        target = staging / file_name
        _write(network, config.format, target, config.quantize, calibration)
        check = _checked(config, name, target, pixels, expected, labels)
        record = {"model": name, "format": config.format, "quantize": config.quantize, "file": file_name,
                  "bytes": _size(target), "input": f"float32 pixels 0-255, shape [n, {size}, {size}, 3]",
                  "output": {"probabilities over": manifest["classes"]},
                  "runtime": _runtime(config.format, file_name), "check": check}
        record = export_folder.publish(out, staging, file_name, record)
    log.info("exported %s as %s: %s", name, config.format, out / file_name)
    return record


def _checked(config: ExportConfig, name: str, target: Path, pixels: np.ndarray, expected: np.ndarray,
             labels) -> dict:
    """The written file run on the check images and compared with predict's probabilities.

    Raises:
        RunError: a float export differs from predict by more than :data:`TOLERANCE`.
    """
    check = {"images": len(pixels), **_compared(_run(config.format, target, pixels), expected, labels),
             "tolerance": None if config.quantize == "int8" else TOLERANCE}
    if config.quantize == "none" and check["max_abs_difference"] > TOLERANCE:
        raise RunError(f"The {config.format} export of {name} differs from predict by up to "
                       f"{check['max_abs_difference']:.3g} in probability on {len(pixels)} validation "
                       f"images (tolerance {TOLERANCE:g}); nothing was written.")
    if config.format == "openvino" and openvino_default_precision() != "f32":  # what a plain compile does
        got, precision = _openvino(target, pixels, {})
        check["runtime_default"] = {"precision": precision, **_compared(got, expected, labels)}
    return check
