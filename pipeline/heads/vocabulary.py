"""Names the heads take, which the settings check: how a feature map becomes a vector (and the
Keras layer that does it inside a network), and the dense head's optimizers."""

from __future__ import annotations

# How a spatial feature map (pooling none) becomes a vector, and the Keras layer that does it
# inside a network (the dense head, an exported linear model).
SPATIAL = {"flatten": "Flatten", "avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}
# The dense head's optimizers (and stage 3's, which continues from it).
OPTIMIZERS = ("adam", "rmsprop", "sgd")


def spatial_layer(spatial: str, name: str):
    """The Keras layer that turns a feature map into a vector as ``spatial`` says."""
    import keras

    return getattr(keras.layers, SPATIAL[spatial])(name=name)
