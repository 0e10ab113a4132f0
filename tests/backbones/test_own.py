"""The user's own network as a backbone: a .keras file cut at a layer, or a SavedModel."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import CompareConfig, ExtractConfig, backbones, compare, extract_features
from pipeline.errors import ConfigError, UnknownNameError, WeightsError
from pipeline.features.view import FeatureCache

from conftest import make_dataset



def _classifier(seed: int = 0):
    """A small trained-looking classifier: conv, pooled features, an embedding, a softmax."""
    import keras

    keras.utils.set_random_seed(seed)
    pixels = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(pixels)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="embed")(x)
    return keras.Model(pixels, keras.layers.Dense(3, activation="softmax", name="classifier")(x))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("own") / "mine.keras"
    _classifier().save(path)
    return path


def _pixels(n=3):
    return np.random.default_rng(0).uniform(0, 255, (n, 32, 32, 3)).astype("float32")


def test_a_keras_model_is_cut_at_the_layer_feeding_its_classifier_by_default(model_file):
    import keras

    spec = backbones.resolve(str(model_file))
    assert (spec.backbone.layer, spec.image_size, spec.pooling) == ("embed", 32, "none")
    assert spec.weights_identity.startswith("sha256:") and spec.preprocessing.startswith("none")
    whole = keras.saving.load_model(model_file)
    expected = keras.Model(whole.inputs, whole.get_layer("embed").output).predict(_pixels(), verbose=0)
    np.testing.assert_allclose(backbones.build(spec).predict(_pixels(), verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("layer, pooling, shape", [
    ("pool", None, (8,)), ("conv", None, (8,)), ("conv", "max", (8,)), ("conv", "none", (30, 30, 8)),
    ("classifier", None, (3,)),
])
def test_a_named_layer_gives_that_layers_width(model_file, layer, pooling, shape):
    spec = backbones.resolve(str(model_file), layer=layer, pooling=pooling)
    assert backbones.build(spec).predict(_pixels(2), verbose=0).shape == (2, *shape)


def test_a_registry_preprocess_is_applied_before_the_model(model_file):
    import keras

    plain = backbones.build(backbones.resolve(str(model_file))).predict(
        keras.applications.mobilenet.preprocess_input(_pixels()), verbose=0)
    spec = backbones.resolve(str(model_file), preprocess="mobilenet")
    assert spec.preprocessing == "keras.applications.mobilenet.preprocess_input (tf)"
    np.testing.assert_allclose(backbones.build(spec).predict(_pixels(), verbose=0), plain, atol=1e-6)


def test_a_saved_model_gives_its_signature_output(tmp_path, model_file):
    import keras

    whole = keras.saving.load_model(model_file)
    whole.export(str(tmp_path / "served"), verbose=False)
    spec = backbones.resolve(str(tmp_path / "served"))
    assert spec.image_size == 32 and spec.backbone.layer == "output_0"
    np.testing.assert_allclose(backbones.build(spec).predict(_pixels(), verbose=0),
                               whole.predict(_pixels(), verbose=0), atol=1e-6)
    with pytest.raises(ConfigError, match="names an output of its serving signature: output_0. Got 'x'"):
        backbones.resolve(str(tmp_path / "served"), layer="x")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layer="embd"), ConfigError, "`layer` 'embd' is not a layer of mine.keras. Nearest names: embed"),
    (dict(image_size=64), ConfigError, "mine.keras takes 32 px images. Got `image_size` 64."),
    (dict(pooling="cls"), ConfigError, "`--pooling cls` does not apply to layer embed of mine.keras, "
                                       "which takes none"),
    (dict(weights="none"), WeightsError, "carries its weights; `weights` does not apply"),
    (dict(preprocess="mobilenet_v9"), UnknownNameError, "`preprocess` names the registry backbone whose "
                                                        "preprocess_input to apply: one of mobilenet,"),
])
def test_own_model_settings_that_do_not_fit_say_so(model_file, kwargs, error, message):
    with pytest.raises(error) as err:
        backbones.resolve(str(model_file), **kwargs)
    assert message in str(err.value)


def test_the_files_hash_is_its_identity_and_runs_go_through_it(tmp_path, model_file, capsys):
    from pipeline.cli import main

    data = make_dataset(tmp_path / "data", splits=("train", "validation", "test"), per_class=8)
    config = ExtractConfig(backbone=str(model_file), cache_dir=str(tmp_path / "cache"))
    first = extract_features(data, config, progress=False)
    key = FeatureCache(first.path).key
    assert (key["backbone"], key["layer"], key["source"]) == ("file:mine.keras", "embed", str(model_file))
    assert first.feature_shape == (16,)
    capsys.readouterr()
    assert main(["inspect", str(first.path)]) == 0
    shown = capsys.readouterr().out
    assert "  layer          embed\n" in shown and f"  source         {model_file}\n" in shown
    retrained = tmp_path / "mine.keras"
    _classifier(seed=1).save(retrained)
    second = extract_features(data, ExtractConfig(backbone=str(retrained), cache_dir=str(tmp_path / "cache")),
                              progress=False)
    assert second.computed == 48 and FeatureCache(second.path).key["weights"] != key["weights"]
    moved = tmp_path / "elsewhere" / "mine.keras"
    moved.parent.mkdir()
    shutil.copy(model_file, moved)
    third = extract_features(data, ExtractConfig(backbone=str(moved), cache_dir=str(tmp_path / "cache")),
                             progress=False)
    assert third.computed == 0 and third.reused == 48, "the same file elsewhere shares the rows"

    compare(first.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run")))
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "run"), str(data / "test"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 16


@pytest.mark.parametrize("saved_model", [False, True], ids=["keras-file", "saved-model"])
def test_a_model_rewritten_after_it_was_hashed_is_not_loaded(tmp_path, model_file, saved_model):
    """Keras loads a private copy of the bytes hashed, and those must be the ones the cache key has."""
    import keras

    path = tmp_path / ("served" if saved_model else "mine.keras")
    if saved_model:
        keras.saving.load_model(model_file).export(str(path), verbose=False)
    else:
        shutil.copy(model_file, path)
    spec = backbones.resolve(str(path))
    expected = backbones.build(spec).predict(_pixels(), verbose=0)
    if saved_model:
        _classifier(seed=1).export(str(path), verbose=False)
    else:
        _classifier(seed=1).save(path)
    with pytest.raises(WeightsError, match=rf"^The model {re.escape(str(path))} changed after it was read "
                                           r"for the cache key \(sha256:[0-9a-f+]+; now sha256:[0-9a-f+]+\), "
                                           r"so nothing is computed with it\."):
        backbones.build(spec)
    again = backbones.resolve(str(path))  # resolved anew, as every run does: built from the new bytes
    assert again.weights_identity != spec.weights_identity
    assert not np.allclose(backbones.build(again).predict(_pixels(), verbose=0), expected)


def test_a_model_path_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "mine.keras"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    with pytest.raises(ConfigError, match=r"is not a regular file \(a device, FIFO or socket\), so it is "
                                          r"not read\. Fix: pass a `\.keras` file or a SavedModel folder\."):
        backbones.resolve(str(fifo))
