"""KerasHub presets as backbones, built offline from tiny random presets."""

import contextlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="hub: backbones need the [hub] extra (keras-hub)")

from pipeline import CompareConfig, ExtractConfig, backbones, compare, extract_features  # noqa: E402
from pipeline.features.view import FeatureCache  # noqa: E402
from pipeline.errors import ConfigError, UnknownNameError, WeightsError  # noqa: E402

from conftest import make_dataset  # noqa: E402
from hub_presets import FAMILIES, SIZE, write_preset  # noqa: E402

TOKEN_FAMILIES = ("dinov2", "dinov3", "vit", "deit")


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    root = tmp_path_factory.mktemp("presets")
    return {family: (root / family, write_preset(root / family, family)) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_extracts_features_of_its_stated_shape(family, presets, tmp_path, tiny_data):
    folder, width = presets[family]
    config = ExtractConfig(backbone=f"hub:{folder}", cache_dir=str(tmp_path / "cache"))
    view = FeatureCache(extract_features(tiny_data, config, progress=False).path)
    assert view.key["image_size"] == SIZE, "the converter's size is the default"
    assert view.key["pooling"] == {"siglip": "pooled", "resnet": "avg", "densenet": "avg",
                                    "efficientnet": "avg"}.get(family, "cls")
    assert "ImageConverter: x * " in view.key["preprocessing"]
    assert view.key["weights"].startswith("sha256:")
    train = view.load("train")
    assert train.features.shape == (12, width)
    assert np.isfinite(train.features).all() and train.features.std(axis=0).max() > 0


@pytest.mark.parametrize("family", TOKEN_FAMILIES)
def test_transformers_give_the_class_token_or_the_mean_of_patch_tokens(family, presets):
    import keras_hub

    folder, width = presets[family]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    hub = keras_hub.models.Backbone.from_preset(str(folder))
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    scale, offset = converter.scale, converter.offset or 0.0
    tokens = np.asarray(hub({k: pixels * scale + offset for k in hub.input} if isinstance(hub.input, dict)
                            else pixels * scale + offset))
    patches = (SIZE // 8) ** 2
    for pooling, expected in (("cls", tokens[:, 0]), ("avg", tokens[:, -patches:].mean(axis=1))):
        model = backbones.build(backbones.resolve(f"hub:{folder}", pooling=pooling))
        np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-5)


def test_hub_settings_that_do_not_apply_are_refused(presets):
    folder = presets["dinov2"][0]
    with pytest.raises(ConfigError, match=r"`--pooling max` does not apply to hub:.*which takes cls, avg"):
        backbones.resolve(f"hub:{folder}", pooling="max")
    with pytest.raises(ConfigError, match="`alpha` does not apply to hub:"):
        backbones.resolve(f"hub:{folder}", alpha=0.5)
    with pytest.raises(WeightsError, match="carries its own weights; `weights` takes only"):
        backbones.resolve(f"hub:{folder}", weights=str(folder / "model.weights.h5"))
    with pytest.raises(UnknownNameError, match=r"Nearest: hub:dinov2_small"):
        backbones.resolve("hub:dinov2_smal")
    with pytest.raises(ConfigError, match="has no config.json"):
        backbones.resolve(f"hub:{folder.parent}")


def test_the_backbones_command_lists_the_installed_presets(capsys):
    from pipeline.cli import main

    assert main(["backbones", "hub:dino*", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"hub:dinov2_small", "hub:dinov2_with_registers_base", "hub:dinov3_vit_small_lvd1689m"} <= set(rows)
    assert rows["hub:dinov2_small"]["pooling"] == ["cls", "avg"]
    assert rows["hub:dinov2_small"]["family"] == "DINOV2Backbone"


def test_a_hub_backbone_runs_extract_compare_predict(presets, tmp_path, capsys):
    from pipeline.cli import main

    folder = presets["dinov2"][0]
    data = make_dataset(tmp_path / "data", splits=("train", "validation", "test"), per_class=8)
    cache = extract_features(data, ExtractConfig(backbone=f"hub:{folder}", cache_dir=str(tmp_path / "c")),
                             progress=False)
    result = compare(cache.path, CompareConfig(classifiers=("logreg", "dense"), out=str(tmp_path / "run"),
                                               params={"dense": {"epochs": [5], "units": [8]}}))
    assert {row["classifier"] for row in result.leaderboard} == {"logreg", "dense"}
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "run"), "--model", "logreg", str(data / "test"),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert len(rows) == 16
    # predict's features are stage 1's: the same classifier on the cached test rows agrees.
    from pipeline.runs import load_model

    test = FeatureCache(cache.path).load("test")
    expected = load_model(tmp_path / "run", "logreg").predict_proba(test.features)
    by_path = {str(Path(r["path"]).relative_to(data)): r for r in rows}
    got = np.array([[by_path[p]["probabilities"][c] for c in ("cats", "dogs")] for p in test.paths])
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_a_local_preset_is_identified_by_every_file_in_it_at_any_depth(presets, tmp_path):
    """A preset folder's nested files (a tokenizer's assets) are part of its identity, as a
    SavedModel folder's are: changing one must not serve the old features."""
    import shutil

    folder = tmp_path / "preset"
    shutil.copytree(presets["dinov2"][0], folder)
    (folder / "assets").mkdir(exist_ok=True)
    (folder / "assets" / "extra.txt").write_text("one")
    before = backbones.resolve(f"hub:{folder}").weights_identity
    (folder / "assets" / "extra.txt").write_text("two")
    after = backbones.resolve(f"hub:{folder}").weights_identity
    assert before.startswith("sha256:") and after.startswith("sha256:") and before != after


def test_a_preset_folder_rewritten_after_it_was_hashed_is_not_loaded(presets, tmp_path, monkeypatch):
    """keras_hub loads a private copy of the files hashed, and those must be the ones the key has."""
    from pipeline import _files

    folder = shutil.copytree(presets["resnet"][0], tmp_path / "preset")
    spec = backbones.resolve(f"hub:{folder}")
    assert spec.weights_identity.startswith("sha256:")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = backbones.build(spec).predict(pixels, verbose=0)
    # Junk written into the folder as keras_hub is about to read it: the copy holds the bytes hashed.
    copy = _files.hashed_copy

    @contextlib.contextmanager
    def then_overwritten(source):
        with copy(source) as copied:
            (folder / "model.weights.h5").write_bytes(b"not weights")
            yield copied

    monkeypatch.setattr("pipeline.backbones.registry.hashed_copy", then_overwritten)
    np.testing.assert_allclose(backbones.build(spec).predict(pixels, verbose=0), expected, rtol=1e-5)
    monkeypatch.undo()
    with pytest.raises(WeightsError, match=rf"^The preset folder {re.escape(str(folder))} changed after it "
                                           r"was read for the cache key \(sha256:[0-9a-f+]+; now "
                                           r"sha256:[0-9a-f+]+\), so nothing is computed with it\."):
        backbones.build(spec)
    assert backbones.resolve(f"hub:{folder}").weights_identity != spec.weights_identity
