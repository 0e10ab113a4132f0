"""The backbone registry, parametrised so a new entry is tested for free."""

import contextlib

import numpy as np
import pytest

from pipeline import backbones
from pipeline.errors import ConfigError, UnknownNameError, WeightsError

ENTRIES = [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.slow else [])
           for b in backbones.list_backbones()]


@pytest.mark.parametrize("entry", ENTRIES)
def test_entry_builds_with_its_table_shapes(entry):
    spatial = backbones.build(backbones.resolve(entry.name, pooling="none", weights="none"))
    assert spatial.output_shape[1:] == entry.feature_shape("none")
    size = max(entry.min_size, 32)
    pooled = backbones.build(backbones.resolve(entry.name, image_size=size, weights="none"))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    # Called eagerly: tracing predict()'s graph of NASNet's 1000 layers costs more than the pass.
    features = np.asarray(pooled(pixels, training=False))
    assert features.shape == (2, *entry.feature_shape("avg"))
    assert np.isfinite(features).all()


def test_list_with_pattern():
    names = [b.name for b in backbones.list_backbones("efficientnet*")]
    assert names == ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                     "efficientnet_b3", "efficientnet_v2_b0"]
    assert len(backbones.BACKBONES) >= 19


def test_defaults_are_mobilenet_quarter_at_224():
    spec = backbones.resolve()
    assert (spec.backbone.name, spec.alpha, spec.image_size, spec.pooling, spec.weights) == (
        "mobilenet", 0.25, 224, "avg", "imagenet")


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        backbones.resolve("vgg61")
    assert str(err.value).startswith("`backbone` must be one of mobilenet, mobilenet_v2,")
    assert "; or hub:<KerasHub preset>, or a .keras file or SavedModel folder of your own. Got 'vgg61'." \
        in str(err.value)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(pooling="mean"), UnknownNameError,
     "`pooling` must be one of avg, max, none, cls, pooled. Got 'mean'."),
    (dict(pooling="cls"), ConfigError, "`--pooling cls` does not apply to mobilenet, which takes avg, "
                                       "max, none (default avg)."),
    (dict(layer="conv1"), ConfigError, "`layer` applies only to your own model"),
    (dict(name="no/such/model.keras"), ConfigError, "is neither a registry name nor an existing model"),
    (dict(name="vgg16", alpha=0.5), ConfigError, "vgg16 has no width multiplier"),
    (dict(alpha=0.3), ConfigError, "must be one of 0.25, 0.5, 0.75, 1. Got 0.3."),
    (dict(name="inception_v3", image_size=64), ConfigError, "must be at least 75 px. Got 64."),
    (dict(weights="/no/such/file.h5"), WeightsError, "which is not a file"),
])
def test_bad_settings_get_one_clear_message(kwargs, error, message):
    with pytest.raises(error) as err:
        backbones.resolve(**kwargs)
    assert message in str(err.value)


def test_random_weights_accept_any_alpha():
    assert backbones.resolve(alpha=0.3, weights="none").alpha == 0.3


def test_weights_file_that_does_not_fit(tmp_path):
    other = backbones.build(backbones.resolve("mobilenet", alpha=0.5, image_size=32, weights="none"))
    path = tmp_path / "mobilenet_half.weights.h5"
    other.layers[-1].save_weights(path)
    spec = backbones.resolve("mobilenet", alpha=0.25, image_size=32, weights=str(path))
    assert spec.weights_identity.startswith("sha256:")
    with pytest.raises(WeightsError, match=r"does not fit mobilenet \(alpha 0.25, 32 px\)"):
        backbones.build(spec)


def test_weights_file_that_fits_is_loaded(tmp_path):
    spec = backbones.resolve("mobilenet", image_size=32, weights="none")
    source = backbones.build(spec, seed=1)
    path = tmp_path / "quarter.weights.h5"
    source.layers[-1].save_weights(path)
    loaded = backbones.build(backbones.resolve("mobilenet", image_size=32, weights=str(path)))
    pixels = np.full((1, 32, 32, 3), 100.0, "float32")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), source.predict(pixels, verbose=0), rtol=1e-5)


def test_weights_that_change_after_they_were_hashed_are_not_loaded(tmp_path, monkeypatch):
    """Keras loads a private copy of the bytes hashed, and those must be the ones the cache key has."""
    from pipeline import _files

    spec = backbones.resolve("mobilenet", image_size=32, weights="none")
    path = tmp_path / "quarter.weights.h5"
    backbones.build(spec, seed=1).layers[-1].save_weights(path)
    resolved = backbones.resolve("mobilenet", image_size=32, weights=str(path))
    assert resolved.weights_identity == "sha256:" + _files.sha256_file(path)
    backbones.build(spec, seed=2).layers[-1].save_weights(path)  # rewritten since it was resolved
    with pytest.raises(WeightsError, match=r"The weights file .*quarter\.weights\.h5 changed after it was "
                                           r"read for the cache key \(sha256:[0-9a-f]{64}; now sha256:"
                                           r"[0-9a-f]{64}\), so nothing is computed with it\. Fix: run "
                                           r"again once it is no longer being written\."):
        backbones.build(resolved)
    # Written to as Keras is about to read it: Keras reads the copy, which holds the bytes hashed.
    again = backbones.resolve("mobilenet", image_size=32, weights=str(path))
    copies, copy = [], _files.hashed_copy

    @contextlib.contextmanager
    def then_overwritten(source):
        with copy(source) as (copied, identity):
            path.write_bytes(b"not weights")
            copies.append(copied)
            yield copied, identity

    monkeypatch.setattr("pipeline.backbones.registry.hashed_copy", then_overwritten)
    pixels = np.full((1, 32, 32, 3), 100.0, "float32")
    np.testing.assert_allclose(backbones.build(again).predict(pixels, verbose=0),
                               backbones.build(spec, seed=2).predict(pixels, verbose=0), rtol=1e-5, atol=0)
    assert len(copies) == 1 and not copies[0].exists()  # the private copy is gone


def test_a_weights_file_that_cannot_be_copied_says_where_room_is_needed(tmp_path, monkeypatch):
    import errno

    from pipeline import _files

    path = tmp_path / "quarter.weights.h5"
    backbones.build(backbones.resolve("mobilenet", image_size=32, weights="none")).layers[-1].save_weights(path)
    spec = backbones.resolve("mobilenet", image_size=32, weights=str(path))

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files, "_copied", full)
    with pytest.raises(WeightsError, match=r"^Could not copy the weights file .*quarter\.weights\.h5 into a "
                                           r"private temporary folder to load it \(\[Errno 28\] No space left "
                                           r"on device\)\. Fix: free space in .+, or set TMPDIR to a folder "
                                           r"with room for it\.$"):
        backbones.build(spec)


def test_imagenet_weights_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet.file_utils.get_file", offline)
    with pytest.raises(WeightsError) as err:
        backbones.build(backbones.resolve("mobilenet", image_size=224))
    text = str(err.value)
    assert "Could not obtain the ImageNet weights of mobilenet (alpha 0.25, 224 px)" in text
    assert str(tmp_path / "models") in text
    assert "`--weights PATH`" in text and "`--weights none`" in text
