"""What runs the backbone's forward pass: Keras (TensorFlow) or OpenVINO.

Both run the very same network, converted once from the Keras model, and in
float32 give the same features (to about 2e-5 on values up to ~6), so they
share store rows: the engine is not part of the feature spec. OpenVINO's
bfloat16 changes the numbers, so ``precision="bf16"`` is its own spec, and so
is ``precision="int8"``, the network quantized by NNCF (:mod:`.quantize`).

``auto`` is the faster engine for the job: OpenVINO on a machine without a
GPU (it runs the same network 2-4x faster than TensorFlow on a CPU) once
its one conversion pays, that is when the spec's converted model is already
kept or its store will hold at least :data:`AUTO_MIN_IMAGES` rows once this
run is done (a few seconds of conversion cost more than a Keras pass over a
handful of images, but a store that has grown that large grows on);
Keras when TensorFlow sees a GPU or OpenVINO is not installed. A backbone
OpenVINO cannot convert falls back to Keras with a warning.

An engine maps batches ``(indices, images)`` to ``(indices, features)`` in
order. OpenVINO's keeps several inference requests in flight: inference
releases the GIL, so tf.data decodes the next batches while they run.
Its model is compiled for a fixed batch size (static shapes are faster on
its CPU plugin); a short last batch is padded and the padding dropped.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np

from .. import backbones
from ..config import ENGINES
from ..errors import ConfigError, first_line
from . import kept as kept_files

log = logging.getLogger(__name__)


def _openvino():
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


# MobileNet 0.25 @224 on two cores: about 3 s to convert, and OpenVINO saves
# about 2.5 ms an image over Keras, so the conversion pays after ~1000 images.
AUTO_MIN_IMAGES = 1000


def _kept_path(ov, folder: Path) -> Path:
    """Where a store folder keeps the converted model, for this OpenVINO version."""
    return folder / f"openvino-{ov.__version__.split('-')[0]}" / "model.xml"


def kept_model(folder: Path | None) -> Path | None:
    """The converted model kept in a store folder, for this OpenVINO version (None: none)."""
    ov = _openvino()
    if ov is None or folder is None:
        return None
    xml = _kept_path(ov, folder)
    return xml if xml.is_file() else None


def choose(engine: str, precision: str = "float32", images: int = AUTO_MIN_IMAGES,
           folder: Path | None = None) -> str:
    """The engine ``engine`` resolves to on this machine for ``images`` images: "keras" or "openvino".

    Args:
        images: what the conversion would serve: the images to compute, and
            for an extraction the rows its store holds already.
        folder: the store folder where a converted model may be kept already.
    """
    if engine not in ENGINES:
        raise ConfigError(f"`--engine` must be one of {', '.join(ENGINES)}. Got {engine!r}.")
    if precision != "float32" and engine == "keras":
        raise ConfigError(f"`--precision {precision}` runs on the OpenVINO engine. Fix: pass "
                          "`--engine openvino` (or auto), or `--precision float32`.")
    if engine == "keras":
        return "keras"
    if _openvino() is None:
        if engine == "openvino" or precision != "float32":
            raise ConfigError("`--engine openvino` needs the openvino package. Fix: "
                              "pip install openvino, or pass `--engine keras`.")
        return "keras"
    if engine == "auto" and precision == "float32":
        if _gpu_visible() or (images < AUTO_MIN_IMAGES and kept_model(folder) is None):
            return "keras"
    return "openvino"


class KerasEngine:
    """TensorFlow's forward pass (every GPU of the machine when it has several).

    Without a multi-GPU strategy, the last network built and traced is kept
    for the process: the next extraction with the same spec, weights and seed
    (a notebook's next call, or predict's after extract) skips building and
    tracing it, seconds for the larger backbones. A spec carries the hash of
    the files its weights come from, so a changed file, resolved again, is
    built anew.
    """

    def __init__(self, spec: backbones.BackboneSpec, seed: int):
        strategy = backbones.gpu_strategy()
        if strategy is None:
            self.forward, self.feature_shape = _last_forward(spec, seed)
        else:
            with strategy.scope():
                self.forward, self.feature_shape = _forward(spec, seed, strategy)
        self.name = "keras"
        self.conversion_seconds = 0.0

    def map(self, batches):
        for idx, images in batches:
            yield idx, self.forward(images).numpy()


def _forward(spec: backbones.BackboneSpec, seed: int, strategy) -> tuple:
    model = backbones.build(spec, seed=seed)
    return backbones.compiled_forward(model, strategy), tuple(int(d) for d in model.output_shape[1:])


@functools.lru_cache(maxsize=1)
def _last_forward(spec: backbones.BackboneSpec, seed: int) -> tuple:
    return _forward(spec, seed, None)


class OpenVINOEngine:
    """OpenVINO's CPU runtime, on the network converted once per feature spec.

    Args:
        folder: where the converted model is kept (the store's folder), so it
            is converted once per spec; None converts it every time.
    """

    def __init__(self, spec: backbones.BackboneSpec, seed: int, batch_size: int,
                 folder: Path | None = None, precision: str = "float32", calibration=None):
        ov = _openvino()
        self.batch_size = batch_size
        self.name = f"openvino {ov.__version__.split('-')[0]}" + (" int8" if precision == "int8" else "")
        started = time.perf_counter()
        model = self._converted(ov, spec, seed, folder)
        if precision == "int8":
            from .quantize import quantized

            model = quantized(ov, model, folder, calibration)
        self.conversion_seconds = time.perf_counter() - started
        size = spec.image_size
        model.reshape({model.inputs[0].get_any_name(): [batch_size, size, size, 3]})
        self.feature_shape = tuple(int(d) for d in model.outputs[0].get_partial_shape().to_shape()[1:])
        core = ov.Core()
        if precision == "bf16" and not cpu_has_bf16():
            raise ConfigError(
                "`--precision bf16`: this CPU has no bfloat16 units (OpenVINO's "
                "OPTIMIZATION_CAPABILITIES lists no BF16), so its rows would not be bf16 ones. "
                "Fix: extract on a CPU with AVX512_BF16 or AMX, or use `--precision float32`.")
        # Threads unpinned: the decoders run on the same cores, and inference threads pinned to
        # them could not make way (pinned, the extraction loop ran 6-9 % slower on a 2-core
        # Xeon with AVX-512; BENCHMARKS.md).
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self.compiled = core.compile_model(model, "CPU", config)
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def _converted(self, ov, spec, seed: int, folder: Path | None):
        kept = kept_model(folder)
        if kept is not None:
            model = kept_files.read(ov, kept)
            if model is not None:
                return model
        xml = _kept_path(ov, folder) if folder else None
        model = backbones.build(spec, seed=seed)
        try:
            with warnings.catch_warnings():
                # OpenVINO traces the model with a tuple where Keras names its input.
                warnings.simplefilter("ignore", UserWarning)
                converted = ov.convert_model(model)
        except Exception as exc:  # noqa: BLE001 - any converter failure means: use Keras
            raise ConversionError(f"OpenVINO could not convert {spec.backbone.name} "
                                  f"({first_line(exc)})") from exc
        if xml is not None:
            kept_files.keep(ov, converted, xml)
        if xml is not None and xml.is_file():
            log.info("converted %s to OpenVINO once for this feature spec (%s)", spec.backbone.name,
                     xml.parent)
        return converted

    def map(self, batches):
        """Features of each batch, in order, with up to ``requests`` batches in flight.

        The requests are waited on here, never through a Python callback: a
        callback runs on OpenVINO's threads and needs the GIL, which deadlocked
        against a compiled model being dropped on the main thread. A batch's
        pixels are given to OpenVINO without a copy (``share_inputs``; the
        request holds the array until it is given the next), so a caller must
        not change a batch it has given (tf.data's tensors never change).
        """
        free = deque(self.compiled.create_infer_request() for _ in range(self.requests))
        pending: deque = deque()  # (request, indices, rows) in submission order

        def collect():
            request, idx, rows = pending.popleft()
            request.wait()
            free.append(request)
            return idx, request.get_output_tensor(0).data[:rows].copy()

        try:
            for idx, images in batches:
                pixels = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
                rows = len(pixels)
                if rows < self.batch_size:
                    pixels = np.concatenate([pixels, np.zeros((self.batch_size - rows, *pixels.shape[1:]),
                                                              pixels.dtype)])
                if not free:
                    yield collect()
                request = free.popleft()
                request.start_async({0: pixels}, share_inputs=True)
                pending.append((request, idx, rows))
            while pending:
                yield collect()
        finally:  # nothing runs on after the caller stops reading
            for request, _, _ in pending:
                request.wait()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bfloat16 units to run on (AVX512_BF16 or AMX)."""
    capabilities = _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in [str(c).upper() for c in capabilities]


class ConversionError(Exception):
    """OpenVINO could not convert a backbone (the caller falls back to Keras)."""


def build(engine: str, spec: backbones.BackboneSpec, seed: int, batch_size: int,
          folder: Path | None = None, precision: str = "float32", calibration=None):
    """The engine ``engine`` (from :func:`choose`), ready to map batches.

    Args:
        calibration: for ``precision="int8"`` without a kept int8 model, a callable
            giving the calibration images (see :mod:`.quantize`).
    """
    if engine == "openvino":
        try:
            return OpenVINOEngine(spec, seed, batch_size, folder, precision, calibration)
        except ConversionError as exc:
            if precision != "float32":
                raise ConfigError(f"{exc}. Fix: use `--precision float32`, which runs on Keras.") from None
            log.warning("%s; running it with Keras/TensorFlow instead (same features, slower on a CPU)",
                        exc)
    return KerasEngine(spec, seed)
