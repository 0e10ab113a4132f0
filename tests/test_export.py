"""Export: every format takes pixels and gives the probabilities predict gives."""

import json

import numpy as np
import pytest

from pipeline.config import ExportConfig, PredictConfig
from pipeline.errors import ConfigError, RunError
from pipeline.deploy.export import TOLERANCE, export
from pipeline.heads.linear import linear_head
from pipeline.heads.registry import configure, get_classifier

from conftest import blobs


def _fitted(name: str, X, y, spatial="flatten"):
    estimator, _ = configure(get_classifier(name), 0, {}, None, spatial)
    return estimator.fit(X, y)


@pytest.mark.parametrize("name, n_classes", [("logreg", 2), ("logreg", 3), ("linear_svm", 2),
                                              ("linear_svm", 3)])
def test_linear_classifiers_become_layers_with_the_same_probabilities(name, n_classes):
    import keras

    X, y = blobs(30, n_classes=n_classes, dim=12, seed=1)
    X = X * np.linspace(0.1, 5, 12) + 3  # unequal scales and a mean: standardisation must fold in
    estimator = _fitted(name, X, y)
    features = keras.Input((12,))
    model = keras.Model(features, linear_head(estimator, name, n_classes)(features))
    np.testing.assert_allclose(model.predict(X, verbose=0), estimator.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("spatial", ["flatten", "avg", "max"])
def test_spatial_features_are_vectorised_as_the_classifier_did(spatial):
    import keras

    X, y = blobs(30, n_classes=2, dim=2 * 2 * 3, seed=2)
    maps = X.reshape(-1, 2, 2, 3)
    estimator = _fitted("logreg", maps, y, spatial)
    features = keras.Input((2, 2, 3))
    model = keras.Model(features, linear_head(estimator, "logreg", 2)(features))
    np.testing.assert_allclose(model.predict(maps, verbose=0), estimator.predict_proba(maps), atol=1e-5)


def test_a_classifier_that_knows_fewer_classes_gives_zero_to_the_others():
    import keras

    X, y = blobs(30, n_classes=3, dim=8, seed=3)
    keep = y != 1
    estimator = _fitted("logreg", X[keep], y[keep])
    features = keras.Input((8,))
    got = keras.Model(features, linear_head(estimator, "logreg", 3)(features)).predict(X, verbose=0)
    assert np.all(got[:, 1] == 0)
    np.testing.assert_allclose(got[:, [0, 2]], estimator.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("name", ["knn", "hist_gbdt"])
def test_a_non_linear_classifier_is_refused_with_its_reason(name):
    X, y = blobs(20, dim=4)
    with pytest.raises(ConfigError) as err:
        linear_head(_fitted(name, X, y), name, 2)
    assert str(err.value).startswith(f"{name} (")
    assert "is not a linear classifier, so it has no exact form as network layers and cannot be " \
           "exported. Fix: export logreg, linear_svm, dense or finetuned" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="onnx"), "`format` must be one of keras, savedmodel, tflite, openvino. Got 'onnx'."),
    (dict(format="openvino", quantize="int8"), "`--quantize int8` applies to `--format tflite`. Got "
                                            "`--format openvino`."),
    (dict(quantize="int4"), "`quantize` must be one of none, int8. Got 'int4'."),
    (dict(images=0), "`images` must be a positive integer. Got 0."),
])
def test_export_settings_that_do_not_fit_say_so(stage2_run, tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as err:
        export(stage2_run, ExportConfig(model="dense", out=str(tmp_path / "out"), **kwargs))
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_an_export_that_differs_from_predict_is_not_written(stage2_run, tmp_path, monkeypatch):
    import pipeline.deploy.export as module

    monkeypatch.setattr(module, "TOLERANCE", -1.0)  # any difference at all is too much
    with pytest.raises(RunError, match=r"The keras export of dense differs from predict by up to .* "
                                       r"nothing was written\."):
        export(stage2_run, ExportConfig(model="dense", out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()  # made for the export, removed with it


def _loaded_as_recorded(out, record, run, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """The export loaded by export.json's own lines, on check images; and predict's probabilities."""
    from pipeline.deploy import check
    from pipeline.predict import predict
    from pipeline.runs.run import Run

    opened = Run.open(run)
    paths, _ = check.images(opened, "validation", 16, None)
    pixels = check.pixels(paths, opened.key, int(record["input"].split("[n, ")[1].split(",")[0]))
    monkeypatch.chdir(out)  # the lines name the file as it lies in the export folder
    scope = {"pixels": pixels}
    exec(json.loads((out / "export.json").read_text())[record["file"]]["runtime"]["load"], scope)
    by_path = {row["path"]: row for row in predict(run, paths, PredictConfig(model=record["model"])).rows}
    expected = [[by_path[p]["probabilities"][c] for c in opened.classes] for p in paths]
    return np.asarray(scope["probabilities"]), np.asarray(expected)


def test_an_openvino_export_says_how_to_load_it_and_the_default_precision_s_trade(
        stage2_run, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main
    from pipeline.deploy import as_openvino as module

    default = module.default_precision()  # f32 on a CPU without bf16; bf16 where it has it
    monkeypatch.setattr(module, "default_precision", lambda: "bf16")  # as a bf16 CPU answers
    assert main(["export", "--run", str(stage2_run), "--model", "dense", "--format", "openvino",
                 "--out", str(tmp_path / "out"), "--images", "16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    runtime = record["runtime"]
    assert runtime["library"] == "openvino" and runtime["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert runtime["device"] == "CPU" and "compile_model(\"dense.xml\", \"CPU\"" in runtime["load"]
    traded = record["check"]["runtime_default"]
    assert traded["precision"] == default and traded["max_abs_difference"] >= 0
    assert set(traded["accuracy"]) == {"predict", "export", "change"}
    got, expected = _loaded_as_recorded(tmp_path / "out", record, stage2_run, monkeypatch)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_an_export_on_a_cpu_that_runs_f32_by_default_reports_no_trade(stage2_run, tmp_path, monkeypatch):
    from pipeline.deploy import as_openvino as module

    monkeypatch.setattr(module, "default_precision", lambda: "f32")
    record = export(stage2_run, ExportConfig(model="dense", format="openvino", out=str(tmp_path / "out"),
                                             images=16))
    assert "runtime_default" not in record["check"]


# On the real photos, with the real ImageNet MobileNet.

@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("model, fmt", [("dense", "keras"), ("dense", "savedmodel"), ("dense", "tflite"),
                                        ("dense", "openvino"), ("linear_svm", "openvino")])
def test_every_format_reproduces_predict_on_real_photos(real_run, tmp_path, model, fmt, monkeypatch):
    from pipeline.deploy.as_openvino import default_precision

    record = export(real_run.run_dir, ExportConfig(model=model, format=fmt, out=str(tmp_path / "out"),
                                                   images=100))
    check = record["check"]
    assert check["images"] == 100 and check["max_abs_difference"] <= TOLERANCE
    assert check["accuracy"]["change"] == 0.0 and check["accuracy"]["export"] > 0.9
    assert (tmp_path / "out" / record["file"]).exists() and record["bytes"] > 100_000
    assert json.loads((tmp_path / "out" / "export.json").read_text())[record["file"]] == record
    # Loaded by the lines export.json gives (and the README shows), it reproduces predict.
    got, expected = _loaded_as_recorded(tmp_path / "out", record, real_run.run_dir, monkeypatch)
    assert np.abs(got - expected).max() <= TOLERANCE
    if fmt == "openvino":  # the trade is reported exactly where the runtime would make it
        assert ("runtime_default" in check) == (default_precision() != "f32")


@pytest.mark.slow
@pytest.mark.realdata
def test_int8_tflite_reports_its_accuracy_change(real_run, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["export", "--run", str(real_run.run_dir), "--model", "dense", "--format", "tflite",
                 "--quantize", "int8", "--out", str(tmp_path / "out"), "--images", "100", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    float_size = 4 * 260_000  # MobileNet 0.25's weights and the head's, in float32
    assert record["file"] == "dense_int8.tflite" and record["bytes"] < float_size / 2
    accuracy = record["check"]["accuracy"]
    assert accuracy["change"] == pytest.approx(accuracy["export"] - accuracy["predict"])
    assert abs(accuracy["change"]) <= 0.05, "int8 may move probabilities, not the classes much"
    assert record["check"]["tolerance"] is None


@pytest.mark.slow
@pytest.mark.realdata
def test_the_export_command_refuses_a_non_linear_classifier(real_run, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["export", "--run", str(real_run.run_dir), "--model", "knn", "--format", "tflite",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: knn (KNeighborsClassifier) is not a linear classifier")
