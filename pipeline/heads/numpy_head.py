"""The dense head's inference in numpy: a command on stored features needs no TensorFlow.

A head is ``[reduce] -> [Dense(relu)] -> Dropout -> Dense(sigmoid | softmax)``:
at inference, a pooling or a flatten, two matrix products and an activation.
:func:`read` takes the layers from a saved ``.keras`` file without Keras (the
file is a zip of ``config.json`` and ``model.weights.h5``, read with h5py);
:func:`from_keras` takes them from a fitted model. A file whose layers are
not of that form gives None, and the caller loads it with Keras.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

_REDUCE = {"Flatten": "flatten", "GlobalAveragePooling2D": "avg", "GlobalMaxPooling2D": "max"}
_ACTIVATIONS = ("relu", "sigmoid", "softmax", "linear")


@dataclass(frozen=True)
class Layer:
    kind: str  # "flatten", "avg", "max" or "dense"
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    activation: str = "linear"


class NumpyHead:
    """A head's layers, applied in float32 as Keras applies them at inference."""

    def __init__(self, layers: list[Layer]):
        self.layers = layers

    def __call__(self, X: np.ndarray, block: int = 4096) -> np.ndarray:
        """The output layer's values (a sigmoid column, or softmax rows) for rows of ``X``, in
        blocks of ``block`` rows (the hidden layer's activations stay small)."""
        X = np.asarray(X, dtype=np.float32)
        if len(X) <= block:
            return self._forward(X)
        return np.concatenate([self._forward(X[i:i + block]) for i in range(0, len(X), block)])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            if layer.kind == "flatten":
                x = x.reshape(len(x), -1)
            elif layer.kind in ("avg", "max"):
                x = x.mean(axis=(1, 2)) if layer.kind == "avg" else x.max(axis=(1, 2))
            else:
                x = x @ layer.kernel + layer.bias
                x = _activate(x, layer.activation)
        return x


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "sigmoid":
        from scipy.special import expit

        return expit(x)  # no overflow for large negative x
    if activation == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


def _layers(specs: list[tuple[str, str | None]], weights: list[tuple[np.ndarray, np.ndarray]]) \
        -> NumpyHead | None:
    """``specs``: (Keras class name, activation) per layer; ``weights``: each Dense layer's."""
    layers, dense = [], iter(weights)
    for name, activation in specs:
        if name in ("InputLayer", "Dropout"):  # Dropout is the identity at inference
            continue
        if name in _REDUCE:
            layers.append(Layer(_REDUCE[name]))
        elif name == "Dense" and activation in _ACTIVATIONS:
            kernel, bias = next(dense, (None, None))
            if kernel is None or kernel.ndim != 2 or bias.shape != kernel.shape[1:]:
                return None
            layers.append(Layer("dense", kernel.astype(np.float32), bias.astype(np.float32),
                                activation))
        else:
            return None
    chained = [l.kernel for l in layers if l.kind == "dense"]
    if not chained or next(dense, None) is not None or \
            any(a.shape[1] != b.shape[0] for a, b in zip(chained, chained[1:])):
        return None
    return NumpyHead(layers)


def from_keras(model) -> NumpyHead | None:
    """The layers of a fitted Keras head."""
    specs = [(type(layer).__name__, getattr(layer, "activation", None)) for layer in model.layers]
    specs = [(name, getattr(act, "__name__", act)) for name, act in specs]
    weights = [tuple(np.asarray(w) for w in layer.get_weights()) for layer in model.layers
               if type(layer).__name__ == "Dense"]
    return _layers(specs, weights)


def read(path: Path) -> NumpyHead | None:
    """The layers of a head saved as ``.keras`` (Keras 3's zip), read without Keras.

    Keras names each Dense layer's weights in the file by its class, in order
    (``dense``, ``dense_1``, ...); shapes that do not chain give None.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights_file = io.BytesIO(archive.read("model.weights.h5"))
        if config.get("class_name") != "Sequential":
            return None
        specs = [(layer["class_name"], layer["config"].get("activation"))
                 for layer in config["config"]["layers"]]
        count = sum(name == "Dense" for name, _ in specs)
        with h5py.File(weights_file, "r") as h5:
            weights = [(h5[f"layers/{group}/vars/0"][()], h5[f"layers/{group}/vars/1"][()])
                       for group in ["dense", *(f"dense_{i}" for i in range(1, count))]]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    return _layers(specs, weights)
