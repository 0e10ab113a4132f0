"""Build a registry entry as a Keras model: raw 0-255 pixels in, features out."""

from __future__ import annotations

import logging

from .registry import BackboneSpec

log = logging.getLogger(__name__)


def preprocess_fn(spec: BackboneSpec):
    """The backbone's own preprocessing (identity for in-model ones)."""
    return spec.backbone.preprocess(spec)


def build_base(spec: BackboneSpec, seed: int = 0):
    """The backbone itself, with its pooling, no top: preprocessed pixels in, features out.

    Raises:
        WeightsError: the weights cannot be obtained, or do not fit.
    """
    return spec.backbone.build_base(spec, seed)


def build(spec: BackboneSpec, seed: int = 0, base=None, preprocess=None, train_bn: bool = False):
    """Build the Keras model: raw 0-255 pixels in, features out.

    The backbone's own preprocessing is the model's first step, so whoever
    feeds the model (extraction, fine-tuning, prediction) cannot forget it.

    Args:
        base: an already built :func:`build_base` model to wrap (stage 3
            wraps the one it fine-tunes).
        preprocess: replaces the backbone's own ``preprocess_input``; only
            for checking that a wrong one is caught.
        train_bn: let BatchNormalization layers run in training mode when
            trained (stage 3's ``--train-bn``); by default they never do.

    Raises:
        WeightsError: see :func:`build_base`.
    """
    import keras

    base = build_base(spec, seed) if base is None else base
    preprocess = preprocess_fn(spec) if preprocess is None else preprocess
    inputs = keras.Input((spec.image_size, spec.image_size, 3), name="pixels")
    # training=False keeps BatchNorm in inference mode (keras-io's advice for
    # feature extraction and fine-tuning alike).
    outputs = base(preprocess(inputs), training=None if train_bn else False)
    return keras.Model(inputs, outputs, name=f"{spec.backbone.slug}_features".replace("-", "_")
                       .replace(".", "_"))


def gpu_strategy():
    """MirroredStrategy over every GPU of this machine when it has several; else None."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        log.info("using %d GPUs (MirroredStrategy)", len(gpus))
        return tf.distribute.MirroredStrategy()
    return None


def compiled_forward(model, strategy=None):
    """``model(pixels, training=False)`` as one graph, traced once for any batch size.

    It is traced here, before any image is decoded, so the first batch does
    not wait seconds for it. With a ``tf.distribute`` strategy of several
    replicas (the model built in its scope), each replica runs its own slice
    of every batch and the outputs are gathered back in order.
    """
    import tensorflow as tf

    size = model.input_shape[1]
    signature = [tf.TensorSpec([None, size, size, 3], tf.float32)]
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if replicas == 1:
        forward = tf.function(lambda pixels: model(pixels, training=False),
                              input_signature=signature)
    else:
        def replica_step(pixels):
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            share = (tf.shape(pixels)[0] + replicas - 1) // replicas
            return model(pixels[i * share:(i + 1) * share], training=False)

        forward = tf.function(
            lambda pixels: strategy.gather(strategy.run(replica_step, args=(pixels,)), axis=0),
            input_signature=signature)
    forward.get_concrete_function()
    return forward
