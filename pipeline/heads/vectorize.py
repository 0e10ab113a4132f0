"""What every head's input and output pass through: feature maps to vectors, and
probabilities over all classes."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Vectorize(TransformerMixin, BaseEstimator):
    """Spatial feature maps (n, h, w, c) to vectors; vectors pass through.

    Args:
        spatial: "flatten", "avg" (mean over h, w) or "max".
    """

    def __init__(self, spatial="flatten"):
        self.spatial = spatial

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X)
        if X.ndim <= 2:
            return X
        if self.spatial == "avg":
            return X.mean(axis=(1, 2))
        if self.spatial == "max":
            return X.max(axis=(1, 2))
        return X.reshape(len(X), -1)


