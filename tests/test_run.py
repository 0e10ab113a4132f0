"""``run``: every stage from one configuration, the demo, datasets, recipes."""

import json
import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import make_dataset
from pipeline.backbones import get_backbone
from pipeline.cli import main
from pipeline.config import load_run_config
from pipeline.data.sources import resolve
from pipeline.errors import ConfigError
from pipeline.workflow import run_pipeline

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, and empty Keras caches: what a new user without either has."""
    def refuse(self, address):
        raise OSError(f"network is unreachable (test): {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_run_without_caches_says_what_is_missing_and_what_to_do(offline, capsys):
    assert main(["run", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "Downloading" not in out  # refused before Keras's downloader starts
    assert "Traceback" not in err
    assert err.startswith("error: Could not obtain the dataset cats_and_dogs_filtered: it is not "
                          "in the Keras cache (looked for ")
    assert str(offline / "keras-home" / "datasets" / "cats_and_dogs_filtered_extracted"
               / "cats_and_dogs_filtered") in err
    assert "downloading https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip failed" in err
    assert "`--data DIR`" in err and "`--demo`" in err
    assert "Also: Could not obtain the ImageNet weights of mobilenet (alpha 0.25, 224 px): they are " \
           "not in the Keras cache" in err  # both missing things, in one refusal
    assert err.count("error:") == 1 and out == ""
    assert not Path("runs").exists()


def test_missing_weights_are_said_at_once_and_nothing_reaches_stdout(offline, tiny_data, capsys):
    assert main(["run", "--data", str(tiny_data), "--set", "extract.image_size=32", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert "Could not obtain the ImageNet weights of mobilenet" in err
    assert "storage.googleapis.com cannot be reached" in err


@pytest.mark.parametrize("layout", ["cats_and_dogs_filtered_extracted/cats_and_dogs_filtered",
                                    "cats_and_dogs_extracted/cats_and_dogs_filtered",  # the tutorial, Keras 3
                                    "cats_and_dogs_filtered"])
def test_keras_dataset_is_read_from_the_keras_cache_offline(offline, layout):
    folder = make_dataset(offline / "keras-home" / "datasets" / layout)
    assert resolve("keras:cats_and_dogs_filtered", offline / "cache") == folder


@pytest.mark.parametrize("archive", ["cats_and_dogs.zip", "cats_and_dogs_filtered.zip"])
def test_a_keras_cached_zip_alone_is_extracted_offline(offline, archive):
    import shutil

    source = make_dataset(offline / "src" / "cats_and_dogs_filtered")
    datasets = offline / "keras-home" / "datasets"
    datasets.mkdir(parents=True)
    shutil.make_archive(str(datasets / archive.removesuffix(".zip")), "zip", offline / "src")
    folder = resolve("keras:cats_and_dogs_filtered", offline / "cache")
    stem = archive.removesuffix(".zip")
    assert folder == datasets / f"{stem}_extracted" / "cats_and_dogs_filtered"
    assert sorted(p.name for p in folder.rglob("*.jpg")) == sorted(p.name for p in source.rglob("*.jpg"))
    assert not [p for p in datasets.iterdir() if ".tmp-" in p.name]
    assert resolve("keras:cats_and_dogs_filtered", offline / "cache") == folder  # found, not again


def test_a_broken_keras_cached_zip_says_what_to_do(offline, capsys):
    datasets = offline / "keras-home" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "cats_and_dogs.zip").write_bytes(b"PK\x03\x04 cut short")
    assert main(["run", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "Downloading" not in out  # refused before Keras's downloader starts
    assert f"{datasets / 'cats_and_dogs.zip'} is in the Keras cache but could not be extracted" in err
    assert "Fix: delete it so it is downloaded again" in err and "Traceback" not in err


def test_demo_runs_every_stage_offline_and_reruns_from_its_saved_config(offline, capsys):
    # One fine-tuning epoch instead of the demo's three keeps this test's share of the suite down.
    assert main(["run", "--demo", "--set", "finetune.epochs=1", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stages"] == {"extract": "ran", "compare": "ran", "finetune": "ran"}
    run = Path(result["run_dir"])
    rows = {r["classifier"]: r for r in json.loads((run / "leaderboard.json").read_text())}
    assert set(rows) == {"logreg", "dense", "linear_svm", "knn", "finetuned"}
    assert rows["logreg"]["test"]["accuracy"] > 0.6  # learnable: chance is 1/3
    assert (run / "plots" / "finetune_history.png").is_file()
    saved = load_run_config(run / "run.toml")
    assert saved.extract.backbone == "resnet50" and saved.extract.weights == "none"
    assert main(["run", "--config", str(run / "run.toml"), "--no-progress", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["stages"] == {"extract": "reused", "compare": "reused", "finetune": "reused"}


def test_run_reuses_its_folder_and_refuses_other_settings(tmp_path, tiny_data, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="pipeline")
    tiny = [f"data={json.dumps(str(tiny_data))}", "extract.weights=none", "extract.image_size=32",
            "compare.classifiers=[\"logreg\"]"]
    first = run_pipeline(load_run_config(overrides=tiny))
    assert first.stages == {"extract": "ran", "compare": "ran"}
    assert first.run_dir == Path("runs/data") and "logreg" in first.leaderboard
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    assert said[0].startswith("stage 1 of 2: extracting features of ") and said[1] == "stage 2 of 2: comparing logreg"
    assert run_pipeline(load_run_config(overrides=tiny)).stages == {"extract": "reused", "compare": "reused"}
    other = tiny + ["compare.params.logreg.C=0.5"]
    with pytest.raises(ConfigError, match=r"Run folder runs/data holds a run made with other settings "
                                          r"\(differs in compare.params\). Fix: `overwrite`"):
        run_pipeline(load_run_config(overrides=other))
    replaced = run_pipeline(load_run_config(overrides=other + ["overwrite=true"]))
    assert replaced.stages == {"extract": "reused", "compare": "ran"}
    assert json.loads((replaced.run_dir / "manifest.json").read_text())["config"]["params"] == \
        {"logreg": {"C": [0.5]}}


def test_a_run_folder_conflict_is_refused_before_stage_1_computes(tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = [f"data={json.dumps(str(tiny_data))}", "extract.weights=none", "extract.image_size=32",
            "compare.classifiers=[\"logreg\"]"]
    run_pipeline(load_run_config(overrides=tiny))
    views = sorted(Path("cache").glob("*.h5"))
    with pytest.raises(ConfigError, match=r"holds a run made with other settings \(differs in the features"):
        run_pipeline(load_run_config(overrides=tiny[:2] + ["extract.image_size=48", tiny[3]]))
    assert sorted(Path("cache").glob("*.h5")) == views  # nothing extracted for the refused run
    assert len(list(Path("cache/store").iterdir())) == 1


def _mock_tfds(name: str, examples: int):
    tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")
    return tfds.testing.mock_data(num_examples=examples)


def test_tfds_dataset_becomes_an_image_folder_once(tmp_path):
    with _mock_tfds("cassava", 10):
        folder = resolve("tfds:cassava", tmp_path)
    assert folder == tmp_path / "tfds" / "cassava"
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 30 and {f.relative_to(folder).parts[0] for f in files} == {"train", "validation", "test"}
    assert {f.parent.name for f in files} <= {"cbb", "cbsd", "cgm", "cmd", "healthy"}
    assert resolve("tfds:cassava", tmp_path) == folder  # reused without tfds


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_tiny_data(recipe, tmp_path, monkeypatch):
    """Each recipe as written, with only data, weights, size and epochs overridden."""
    monkeypatch.chdir(tmp_path)
    written = load_run_config(recipe)
    size = max(32, get_backbone(written.extract.backbone).min_size)
    tfds = written.data.startswith("tfds:")
    data = "tfds:cassava" if tfds else str(make_dataset(tmp_path / "data", per_class=5))
    config = load_run_config(recipe, [
        f"data={json.dumps(data)}", "extract.weights=none", f"extract.image_size={size}",
        "compare.params.dense.epochs=1", "finetune.epochs=1",
        f"finetune.frozen_epochs={min(1, written.finetune.frozen_epochs)}", "finetune.handoff_samples=4"])
    # The largest graphs (NASNetLarge's 1000 layers, InceptionV3's 300) take a minute or two to
    # rebuild and fine-tune here: their recipes stop after stage 2 (their stage-3 settings are
    # read as written in tests/config; stage 3 runs for the other recipes).
    finetuned = written.extract.backbone not in ("nasnet_large", "inception_v3")
    if not finetuned:
        config = replace(config, stages=("extract", "compare"))
    if tfds:
        with _mock_tfds("cassava", 12):
            result = run_pipeline(config, progress=False)
    else:
        result = run_pipeline(config, progress=False)
    assert result.stages == {"extract": "ran", "compare": "ran", **({"finetune": "ran"} if finetuned else {})}
    rows = {r["classifier"] for r in json.loads((result.run_dir / "leaderboard.json").read_text())}
    assert rows == set(written.compare.classifiers) | ({"finetuned"} if finetuned else set())
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["models"]["dense"]["params"]["units"] == written.compare.params["dense"]["units"][0]
    if not finetuned:
        return
    tuned = manifest["models"]["finetuned"]["params"]
    assert (tuned["unfreeze_from"], tuned["optimizer"], tuned["learning_rate"], tuned["augment"]) == \
        (written.finetune.unfreeze_from, written.finetune.optimizer, written.finetune.learning_rate,
         written.finetune.augment)
    assert (result.run_dir / "finetune" / "tensorboard").is_dir() == written.finetune.tensorboard
    assert load_run_config(result.run_dir / "run.toml").extract.image_size == size


@pytest.mark.parametrize("setting, message", [
    ('compare.classifiers=["logreg","nope"]',
     "error: `--classifiers` must be one of logreg, dense, linear_svm, knn, hist_gbdt. Got 'nope'."),
    ('finetune.augment="flip,nope"', "error: `--augment` takes flip, rotate, zoom, translate, shear, "
                                      "contrast (e.g. flip,rotate=0.2,zoom=0.2) or none. Got 'nope'."),
    ("compare.params.logreg.C=-1", "error: `--param logreg.C=-1` is refused: "),
    ("extract.pooling=cls", "error: `--pooling cls` does not apply to mobilenet, which takes avg, max, none"),
])
def test_a_bad_name_is_refused_before_any_feature_is_computed(setting, message, tmp_path, tiny_data,
                                                              monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--no-progress", "--finetune", "--set", f"data={json.dumps(str(tiny_data))}",
                 "--set", "extract.weights=none", "--set", f"extract.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                 "--set", setting])
    assert code == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "cache").exists() and not Path("runs").exists()


def test_the_settings_name_every_value_the_registries_own():
    """Classifier, pooling, spatial, optimizer and augmentation names come from their registries."""
    from pipeline.backbones.registry import POOLINGS_OF
    from pipeline.config import CompareConfig, ExtractConfig, FinetuneConfig
    from pipeline.heads.registry import CLASSIFIERS
    from pipeline.heads.vocabulary import OPTIMIZERS, SPATIAL

    assert CompareConfig().classifiers == tuple(c.name for c in CLASSIFIERS.values() if c.default)
    with pytest.raises(ConfigError, match=r"`spatial` must be one of flatten, avg, max. Got 'mean'."):
        CompareConfig(spatial="mean")
    with pytest.raises(ConfigError, match=r"Got 'adamw'. Did you mean 'adam'\?"):
        FinetuneConfig(optimizer="adamw")
    for name in [p for kind in POOLINGS_OF.values() for p in kind]:
        assert ExtractConfig(pooling=name).pooling == name
    assert tuple(SPATIAL) == ("flatten", "avg", "max") and OPTIMIZERS == ("adam", "rmsprop", "sgd")


def test_run_json_says_where_the_seconds_went(tmp_path, tiny_data, capsys):
    assert main(["run", "--data", str(tiny_data), "--weights", "none", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run"), "--set", "extract.image_size=32",
                 "--set", 'compare.classifiers=["logreg", "knn"]', "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    phases = result["phases"]
    for name in ("stage 1: list and fingerprint the files", "stage 1: decode the images and run the network",
                 "stage 2: fit and select every classifier", "stage 2: data audit", "stage 2: report"):
        assert phases[name] > 0, name
    # Timed too, though a network an earlier call of this process built is kept: then about 0 s.
    assert phases["stage 1: import TensorFlow, build (and convert) the network"] >= 0
    assert sum(phases.values()) <= result["seconds"] + 0.05
    assert set(result["classifier_seconds"]) == {"logreg", "knn"}
    assert main(["run", "--data", str(tiny_data), "--weights", "none", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run"), "--set", "extract.image_size=32",
                 "--set", 'compare.classifiers=["logreg", "knn"]', "--no-progress", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["phases"]  # counted afresh: everything reused
    assert "stage 1: decode the images and run the network" not in again
    assert "stage 2: fit and select every classifier" not in again
