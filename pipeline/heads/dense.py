"""The Keras dense head, wrapped as a scikit-learn classifier.

Wrapped the way scikeras does it, so it is compared with logistic regression
through one interface (``fit`` / ``predict_proba`` / ``score``, cloneable), and
stage 3 can rebuild the same layers on top of the backbone and load its
trained weights. TensorFlow is imported only when a head is fitted, exported
or rebuilt: its probabilities on feature arrays are computed in numpy
(:mod:`.numpy_head`), from the fitted model or straight from its ``.keras``
file, so a command on stored features (suggest, drift, predict of stored
rows) loads no TensorFlow.
"""

from __future__ import annotations

import re
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from ..errors import ConfigError, first_line
from . import numpy_head
from .outofcore import FeatureRows
from .proba import full_proba
from .vocabulary import OPTIMIZERS, SPATIAL, spatial_layer


class DenseHead(ClassifierMixin, BaseEstimator):
    """``[reduce] -> Dense(units, relu) -> Dropout -> sigmoid/softmax``.

    With ``units=0`` the head is ``Dropout -> output`` (the TensorFlow
    tutorial's pooled head). Given ``validation_data``, ``fit`` stops early on
    the validation loss and keeps the best epoch's weights; without it, it
    trains exactly ``epochs`` epochs (used to refit on train + validation for
    the number of epochs chosen on validation).

    Args:
        units: hidden units (0: no hidden layer).
        dropout: dropout rate before the output layer.
        optimizer: "adam", "rmsprop" or "sgd".
        learning_rate: the optimizer's learning rate.
        momentum: momentum of "sgd".
        epochs: most epochs to train.
        batch_size: rows per gradient step.
        patience: epochs without a better validation loss before stopping.
        spatial: how spatial feature maps (``pooling="none"`` caches) become a
            vector: "flatten" (Deep Learning with Python's 4x4x512 -> 8192),
            "avg" or "max" pooling.
        class_weight: None or "balanced".
        random_state: seeds weights, dropout and shuffling.
    """

    def __init__(self, units=256, dropout=0.5, optimizer="adam", learning_rate=1e-3,
                 momentum=0.0, epochs=50, batch_size=32, patience=5, spatial="flatten",
                 class_weight=None, random_state=0):
        self.units = units
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.spatial = spatial
        self.class_weight = class_weight
        self.random_state = random_state

    # Checked as scikit-learn checks its own estimators: the registry refuses a bad
    # `--param` with this before any fit, and `fit` refuses it in Python.
    _parameter_constraints = {
        "units": [Interval(Integral, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 0, None, closed="left")],
        "spatial": [StrOptions(set(SPATIAL))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both")],
    }

    def _check_params(self) -> None:
        try:
            self._validate_params()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"dense: {first_line(exc)}") from None

    def build_layers(self, n_classes: int, feature_ndim: int) -> list:
        """The head's layers, in order; stage 3 stacks them on the backbone."""
        import keras

        layers = []
        if feature_ndim == 3:
            layers.append(spatial_layer(self.spatial, "head_reduce"))
        elif feature_ndim != 1:
            raise ConfigError(f"The dense head takes feature vectors or (h, w, c) maps; "
                              f"got features with {feature_ndim} dimensions per row.")
        if self.units:
            layers.append(keras.layers.Dense(int(self.units), activation="relu", name="head_hidden"))
        layers.append(keras.layers.Dropout(self.dropout, name="head_dropout"))
        binary = n_classes == 2
        layers.append(keras.layers.Dense(1 if binary else n_classes,
                                         activation="sigmoid" if binary else "softmax",
                                         name="head_output"))
        return layers

    def compile(self, model, n_classes: int, learning_rate: float | None = None,
                steps_per_execution: int = 32, loss_scale: bool = False,
                slower: tuple[frozenset, float] | None = None) -> None:
        """Compile ``model`` with this head's optimizer and loss.

        Several steps per call by default: these heads are tiny, and per-step
        Python overhead would otherwise dominate on a CPU. Stage 3 uses 1,
        ``loss_scale`` when its base computes in float16 (so small gradients
        do not underflow), and ``slower = (variable paths, factor)`` to train
        those variables (the base's) at ``factor`` times the rate.
        """
        import keras

        rate = self.learning_rate if learning_rate is None else learning_rate
        kind, kwargs = {"adam": (keras.optimizers.Adam, {}),
                        "rmsprop": (keras.optimizers.RMSprop, {}),
                        "sgd": (keras.optimizers.SGD, {"momentum": self.momentum})}[self.optimizer]
        optimizer = kind(rate, **kwargs) if slower is None else _scaled(kind, *slower)(rate, **kwargs)
        if loss_scale:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)

    def fit(self, X, y=None, validation_data=None):
        """Train on arrays, or on :class:`~pipeline.heads.outofcore.FeatureRows` read in batches.

        ``validation_data`` is ``(X, y)`` with arrays, or a ``FeatureRows``.
        """
        import keras

        self._check_params()
        streamed = isinstance(X, FeatureRows)
        if streamed:
            labels, shape = X.labels, X.shape[1:]
        else:
            X = np.asarray(X, dtype="float32")
            labels, shape = y, X.shape[1:]
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ConfigError(f"The dense head needs at least 2 classes; got {n_classes}.")
        keras.utils.set_random_seed(int(self.random_state))
        model = keras.Sequential([keras.Input(shape),
                                  *self.build_layers(n_classes, len(shape))], name="dense_head")
        self.compile(model, n_classes)
        weights = None
        if self.class_weight == "balanced":
            values = compute_class_weight("balanced", classes=np.arange(n_classes), y=encoded)
            weights = dict(enumerate(values.tolist()))
        callbacks, validation = [], None
        encode = lambda labels: np.searchsorted(self.classes_, labels)  # noqa: E731
        if validation_data is not None:
            if streamed:
                validation = validation_data.dataset(int(self.batch_size), encode)
            else:
                Xv, yv = validation_data
                validation = _batches(np.asarray(Xv, dtype="float32"), encode(yv), 1024)
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(self.patience), restore_best_weights=True))
        if streamed:
            train = X.dataset(int(self.batch_size), encode, seed=int(self.random_state))
        else:
            train = _batches(X, encoded, int(self.batch_size), seed=int(self.random_state))
        history = model.fit(train, validation_data=validation, epochs=int(self.epochs),
                            class_weight=weights, callbacks=callbacks, shuffle=False, verbose=0)
        self.history_ = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        if validation is not None:
            self.best_epoch_ = int(np.argmin(self.history_["val_loss"])) + 1
        else:
            self.best_epoch_ = len(self.history_["loss"])
        self.model_ = model
        self.numpy_ = numpy_head.from_keras(model)
        self.n_features_in_ = int(np.prod(shape))
        return self

    def __getattr__(self, name):
        # A head read from a file loads its Keras model only when something needs it
        # (stage 3, export): its probabilities need numpy alone.
        if name == "model_" and "saved_" in self.__dict__:
            import keras

            self.model_ = keras.models.load_model(self.__dict__["saved_"])
            return self.model_
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def predict_proba(self, X):
        check_is_fitted(self, "classes_")
        if isinstance(X, FeatureRows):  # batch by batch: predict() would hold more
            p = np.concatenate([self.model_.predict_on_batch(x)
                                for x in X.dataset(1024, labels=False)])
        elif getattr(self, "numpy_", None) is not None:
            p = self.numpy_(X)
        else:
            p = self.model_.predict(np.asarray(X, dtype="float32"), batch_size=1024, verbose=0)
        n = len(self.classes_)
        return full_proba(p, range(n), n)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path: Path) -> None:
        check_is_fitted(self, "classes_")
        self.model_.save(path)

    @classmethod
    def load(cls, path: Path, params: dict, classes) -> "DenseHead":
        """A fitted head from a saved ``.keras`` file and its parameters.

        Its layers are read in numpy; Keras loads the file only when the model
        itself is asked for, or when the file holds layers numpy does not apply.
        """
        head = cls(**params)
        head.classes_ = np.asarray(classes)
        head.saved_ = Path(path)
        head.numpy_ = numpy_head.read(path)
        if head.numpy_ is None:
            head.numpy_ = numpy_head.from_keras(head.model_)
        return head


def _batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None):
    """In-memory arrays as a ``tf.data`` dataset of batches, reshuffled every
    epoch when seeded.

    Only row numbers are shuffled; each batch is gathered from one copy of
    the arrays. For a head this small, an epoch takes about half the time
    Keras's own adapter for NumPy arrays needs (see BENCHMARKS.md).
    """
    import tensorflow as tf

    features, labels = tf.constant(X), tf.constant(y)
    rows = tf.data.Dataset.range(len(X))
    if seed is not None:
        rows = rows.shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
    return (rows.batch(batch_size)
            .map(lambda i: (tf.gather(features, i), tf.gather(labels, i)))
            .prefetch(2))


def _scaled(kind, paths: frozenset, factor: float):
    """``kind`` (a Keras optimizer class) with its rate times ``factor`` for ``paths``.

    Keras 3 has no per-variable learning rate (keras-team/keras#21741), but
    every optimizer's ``update_step`` receives the rate, so scaling it there
    is exact for Adam, RMSprop and SGD alike, unlike scaling gradients.
    """

    class Discriminative(kind):
        def update_step(self, gradient, variable, learning_rate):
            # TensorFlow names a Keras variable "<path>:0" ("<path>/replica_1:0"
            # for a mirrored copy).
            path = re.sub(r"(/replica_\d+)?:\d+$", "", variable.name)
            if path in paths:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    Discriminative.__name__ = f"Discriminative{kind.__name__}"
    return Discriminative
