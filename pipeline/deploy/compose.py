"""A run's model as one object: pixels in, probabilities over every class out.

As keras-hub's Task owns preprocessing, backbone and head, :class:`ImageClassifier`
owns a run's stage-1 network (decoding, preprocessing, the backbone and its
pooling, all from the run's feature key) and one of its models, and composes
them: for ``predict`` (pixels through the engine extraction ran, then the
head), as one Keras model for export, and as one OpenVINO model for an int8
run. :func:`end_to_end` is the composition stage 3 trains. Stage 3's own model
takes pixels already.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import ConfigError
from ..heads.linear import all_classes, linear_head
from ..heads.proba import full_proba
from ..runs.run import Format, Run


def end_to_end(features, head, name: str):
    """One Keras model, pixels to probabilities: ``head(features(pixels))``."""
    import keras

    pixels = keras.Input(features.input_shape[1:], name="pixels")
    return keras.Model(pixels, head(features(pixels)), name=name)


@dataclass(frozen=True)
class ImageClassifier:
    """One model of a run with the network that computes its features."""

    run: Run
    name: str
    head: object  # the model as loaded from the run (checked against its checksum)
    weights: str | None = None  # stage 1's weights file, when the run's are not Keras' named ones

    @classmethod
    def of(cls, run: Run, model: str = "best", weights: str | None = None,
           features_in: bool = False) -> ImageClassifier:
        """``model`` of ``run`` (``best``: see :meth:`Run.name`), loaded and checked."""
        name = run.name(model, features_in)
        return cls(run, name, run.load(name), weights)

    @property
    def format(self) -> Format:
        return self.run.models[self.name]

    @functools.cached_property
    def extractor(self):
        return self.run.extractor(self.weights)

    def decoding(self):
        """How an image is read and sized for this model, as stage 1 read it (imports TensorFlow)."""
        from ..data.decode import Decoding

        return Decoding.of_view(self.run.key, self.extractor.spec.image_size)

    def probabilities(self, batches, engine: str, batch_size: int, total: int) -> Iterator[tuple]:
        """(indices, probabilities over every class) for each batch of (indices, pixels); features
        come from the engine stage 1 ran (its kept network), then the head."""
        n = len(self.run.classes)
        if self.format.takes_pixels:
            for idx, images in batches:
                yield idx, full_proba(np.asarray(self.head(images, training=False)), range(n), n)
            return
        mapped = self.extractor.engine(engine, batch_size, total, self.run.cache_dir).map(batches)
        for idx, features in mapped:
            yield idx, full_proba(self.head.predict_proba(features), self.head.classes_, n)

    def _head_layers(self):
        """The head as a function of Keras tensors (None for the Keras heads, which are layers).

        Raises:
            ConfigError: a non-linear scikit-learn model, before TensorFlow loads.
        """
        if self.format is not Format.JOBLIB:
            return None
        return linear_head(self.head, self.name, len(self.run.classes))

    def _placed(self, proba):
        """The Keras head's probabilities placed among every class of the run."""
        n = len(self.run.classes)
        classes = self.head.classes_ if getattr(self.head, "classes_", None) is not None else range(n)
        return all_classes(proba, classes, n)

    def _keras_head(self, features):
        return self._placed(self.head.model_(features))

    def keras_model(self):
        """One Keras model, pixels in, probabilities over every class out.

        Raises:
            ConfigError: the model is a non-linear scikit-learn model.
        """
        layers = self._head_layers()  # refused before TensorFlow loads
        import keras

        n = len(self.run.classes)
        if self.format.takes_pixels:  # stage 3's model augments its input while training; its core does not
            core = self.head.get_layer("core") if "core" in [layer.name for layer in self.head.layers] \
                else self.head
            pixels = keras.Input(core.input_shape[1:], name="pixels")
            return keras.Model(pixels, all_classes(core(pixels), range(n), n), name=self.name)
        features = self.extractor.model()
        pixels = keras.Input(features.input_shape[1:], name="pixels")
        if layers is not None:
            return keras.Model(pixels, layers(features(pixels)), name=self.name)
        inner = end_to_end(features, self.head.model_, f"{self.name}_end_to_end")
        return keras.Model(pixels, self._placed(inner(pixels)), name=self.name)

    def int8_network(self):
        """An int8 run's model as one OpenVINO model, pixels in: the int8 backbone its features
        came from (kept in the store, checked), with the head's layers appended.

        Raises:
            ConfigError: the int8 network is no longer kept, or the model has no form as layers.
        """
        if self.format.takes_pixels:
            raise ConfigError("The fine-tuned model is float32 end to end; an int8 run's int8 network "
                              "serves its stage-2 models. Fix: pass `--model` with one of them.")
        layers = self._head_layers()
        import keras
        import openvino as ov

        from ..features import kept
        from ..features.quantize import kept_path

        folder = self.run.store_folder()
        xml = kept_path(ov, folder)
        backbone = kept.read(ov, xml, "int8 model") if xml.is_file() else None
        if backbone is None:
            raise ConfigError(f"The int8 network of this run is not kept in {folder} (or no longer "
                              "matches its checksums). Fix: run the run's `extract --precision int8` "
                              "again, then export.")
        shape = tuple(d.get_length() for d in list(backbone.output(0).get_partial_shape())[1:])
        features = keras.Input(shape, name="features")
        probabilities = (layers or self._keras_head)(features)
        with quiet_conversion():  # weights copied: the Keras model they come from is dropped on return
            appended = ov.convert_model(keras.Model(features, probabilities, name=f"{self.name}_head"),
                                        share_weights=False)
        (parameter,) = appended.get_parameters()
        for target in parameter.output(0).get_target_inputs():  # the head reads the backbone's output
            target.replace_source_output(backbone.get_results()[0].input_value(0))
        return ov.Model(appended.get_results(), backbone.get_parameters(), self.name)


@contextlib.contextmanager
def quiet_conversion():
    """OpenVINO's conversion of a Keras model, without its warning about a traced tuple input."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
