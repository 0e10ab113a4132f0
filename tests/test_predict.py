"""Predict: stage-2 models composed with the recorded backbone; export; bad input."""

import json

import numpy as np
import pytest

from pipeline.features import FeatureCache
from pipeline.cli import main
from pipeline.config import PredictConfig
from pipeline.errors import ConfigError, RunError
from pipeline.deploy.export import keras_files
from pipeline.predict import predict
from pipeline.runs import load_model, read_manifest


def _validation(run):
    cache = FeatureCache(read_manifest(run)["cache"]["path"])
    return cache, cache.load("validation")


@pytest.mark.parametrize("model", ["logreg", "dense"])
def test_predict_gives_the_stage_2_probabilities_for_the_same_images(stage2_run, model):
    cache, validation = _validation(stage2_run)
    files = [str(cache.data_root + "/" + p) for p in validation.paths]
    result = predict(stage2_run, files, PredictConfig(model=model))
    assert [r["path"] for r in result.rows] == files and result.unreadable == []
    got = np.array([[r["probabilities"][c] for c in cache.classes] for r in result.rows])
    expected = load_model(stage2_run, model).predict_proba(validation.features)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["class"] for r in result.rows] == [cache.classes[i] for i in expected.argmax(1)]


def test_unreadable_images_are_reported_not_fatal(stage2_run, tmp_path):
    cache, validation = _validation(stage2_run)
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(open(cache.data_root + "/" + validation.paths[0], "rb").read())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image name")
    result = predict(stage2_run, [str(folder)])
    rows = json.loads((stage2_run / "leaderboard.json").read_text())
    assert result.model == next(r for r in rows if r["recommended"])["classifier"]
    assert [r["path"] for r in result.rows] == [str(folder / "good.jpg")]
    assert [u["path"] for u in result.unreadable] == [str(folder / "broken.jpg")]
    assert result.unreadable[0]["reason"]
    csv_text = result.to_csv().splitlines()
    assert csv_text[0] == "path,class,p_cats,p_dogs,error" and len(csv_text) == 3


@pytest.mark.parametrize("model", ["dense", "logreg"])
def test_predict_export_writes_one_pixels_in_model(stage2_run, tmp_path, model):
    import keras

    cache, validation = _validation(stage2_run)
    files = [cache.data_root + "/" + p for p in validation.paths[:4]]
    paths = keras_files(stage2_run, model, tmp_path / "export")
    composed = keras.models.load_model(paths["keras"])
    assert (tmp_path / "export" / f"{model}_savedmodel" / "saved_model.pb").is_file()
    from pipeline.data.decode import Decoding, load_image

    pixels = np.stack([load_image(f, Decoding(32)).numpy() for f in files])
    expected = load_model(stage2_run, model).predict_proba(validation.features[:4])
    np.testing.assert_allclose(composed.predict(pixels, verbose=0), expected, atol=1e-5)


def test_predict_command_and_its_errors(stage2_run, tmp_path, capsys):
    cache, validation = _validation(stage2_run)
    image = cache.data_root + "/" + validation.paths[0]
    out = tmp_path / "p.json"
    assert main(["predict", "--run", str(stage2_run), "--model", "logreg", image, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["predictions"][0]["path"] == image
    assert main(["predict", "--run", str(stage2_run), "--model", "logreg", image, "--out", str(out)]) == 2
    assert (f"error: `--out` {out} already exists, and the pipeline never replaces a file it cannot "
            "tell it wrote. Fix: pass a new file name") in capsys.readouterr().err
    assert main(["predict", "--run", str(stage2_run), "--model", "svm", image]) == 2
    assert "error: `--model` must be best or one of logreg, dense. Got 'svm'." in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"nowhere\.jpg is neither an image file nor a folder"):
        predict(stage2_run, [str(tmp_path / "nowhere.jpg")])
    with pytest.raises(RunError, match=r"is not a finished run folder: it has no manifest\.json"):
        predict(tmp_path, [image])
