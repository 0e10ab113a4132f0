"""scikit-learn's linear heads as Keras layers that compute exactly their ``predict_proba``.

A pipeline (vectorise, [standardise], logistic regression or a
sigmoid-calibrated linear SVM) becomes one Dense layer per linear model, the
standardisation folded into its weights, so that an export carries the head
the run measured. Any other model has no exact form as layers and is refused
with a sentence.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .vocabulary import spatial_layer


def all_classes(proba, classes, n_classes: int):
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
            return all_classes(dense(coef, intercept, "softmax", "logistic")(x), clf.classes_, n_classes)
        return all_classes(_calibrated_linear(clf, x, dense), clf.classes_, n_classes)

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
            f"{name} ({type(_inner(clf or estimator)).__name__}) is not a linear classifier, so it has no exact "
            "form as network layers and cannot be exported. Fix: export logreg, linear_svm, dense or "
            "finetuned, or load its joblib file with pipeline.runs.load_model in Python.")
    return clf, scale, steps["vectorize"].spatial


def _inner(model):
    """The estimator a sampling wrapper holds (k-NN's), for the message; any other model itself."""
    from .sampled import AtMostRows

    return model.estimator if isinstance(model, AtMostRows) else model


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
