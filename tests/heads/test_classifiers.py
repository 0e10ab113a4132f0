"""The classifier registry, each entry through the one scikit-learn interface."""

import numpy as np
import pytest
from conftest import blobs
from sklearn.base import BaseEstimator, clone

from pipeline.config.fields import parse_param
from pipeline.heads.registry import CLASSIFIERS, chosen_in_fit, configure, get_classifier
from pipeline.errors import ConfigError, UnknownNameError

FAST = {"dense": {"epochs": [15]}}


def _configured(name, spatial="flatten", **overrides):
    estimator, _ = configure(CLASSIFIERS[name], 0, {**FAST.get(name, {}), **overrides}, None, spatial)
    return estimator


def _leaves(estimator) -> dict:
    return {k: v for k, v in estimator.get_params().items()
            if not isinstance(v, (BaseEstimator, list))}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_each_classifier_clones_fits_and_solves_an_easy_problem(name):
    X, y = blobs(30, n_classes=3, seed=1)
    Xt, yt = blobs(30, n_classes=3, seed=2)
    estimator = _configured(name)
    twin = clone(estimator)
    assert twin is not estimator and _leaves(twin) == _leaves(estimator)
    assert twin.fit(X, y) is twin
    proba = twin.predict_proba(Xt)
    assert proba.shape == (len(yt), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (twin.predict(Xt) == yt).mean() >= 0.9
    assert list(twin.classes_) == [0, 1, 2]


@pytest.mark.parametrize("name", list(CLASSIFIERS))
@pytest.mark.parametrize("spatial", ["flatten", "avg"])
def test_each_classifier_takes_spatial_feature_maps(name, spatial):
    X, y = blobs(20, dim=8, seed=1)
    maps = np.repeat(X[:, None, None, :], 2, axis=1).repeat(2, axis=2)  # (n, 2, 2, 8)
    estimator = _configured(name, spatial=spatial).fit(maps, y)
    assert (estimator.predict(maps) == y).mean() >= 0.9


def test_the_binary_dense_head_has_one_sigmoid_output():
    X, y = blobs(20, seed=1)
    head = _configured("dense").fit(X, y)
    output = head.model_.layers[-1]
    assert output.units == 1 and output.activation.__name__ == "sigmoid"
    assert head.predict_proba(X).shape == (40, 2)
    assert len(head.history_["loss"]) == 15 and head.best_epoch_ == 15


def test_the_dense_head_stops_early_on_validation_and_keeps_its_best_epoch():
    X, y = blobs(30, seed=1, separation=0.3)  # hard enough to overfit
    Xv, yv = blobs(30, seed=2, separation=0.3)
    head = _configured("dense", epochs=[200], patience=[2]).fit(X, y, validation_data=(Xv, yv))
    losses = head.history_["val_loss"]
    assert len(losses) < 200
    assert head.best_epoch_ == int(np.argmin(losses)) + 1
    assert chosen_in_fit(CLASSIFIERS["dense"], head) == {"epochs": head.best_epoch_}


def test_short_parameter_names_reach_the_nested_estimator():
    svm, grid = configure(CLASSIFIERS["linear_svm"], 0, {"C": [0.5]}, "balanced", "avg")
    params = svm.get_params()
    assert params["clf__estimator__C"] == 0.5
    assert params["clf__estimator__class_weight"] == "balanced"
    assert params["vectorize__spatial"] == "avg"
    _, grid = configure(CLASSIFIERS["logreg"], 0, {"C": [1, 2, 3]}, None, "flatten")
    assert grid == {"clf__C": [1, 2, 3]}
    knn, _ = configure(CLASSIFIERS["knn"], 0, {}, "balanced", "flatten")  # no class weights: unchanged
    assert "class_weight" not in str(knn.get_params()["clf"])


def test_an_unknown_classifier_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"must name entries of logreg, dense, linear_svm, knn, hist_gbdt\. Got 'svm'"):
        get_classifier("svm")


def test_an_unknown_parameter_lists_the_ones_it_takes():
    with pytest.raises(ConfigError, match=r"Classifier 'logreg' has no parameter 'gamma'\. It takes: .*\bC\b.*"
                                          r"Fix: `--param logreg\.NAME=V1,V2`"):
        configure(CLASSIFIERS["logreg"], 0, {"gamma": [1]}, None, "flatten")


def test_param_text_is_parsed_into_typed_values():
    assert parse_param("logreg.C=0.01,0.1") == ("logreg", "C", [0.01, 0.1])
    assert parse_param("dense.units=0") == ("dense", "units", [0])
    assert parse_param("dense.optimizer=rmsprop") == ("dense", "optimizer", ["rmsprop"])
    assert parse_param("hist_gbdt.max_depth=none") == ("hist_gbdt", "max_depth", [None])
    with pytest.raises(ConfigError, match=r"must look like CLASSIFIER\.NAME=VALUE\[,VALUE\.\.\.\].*Got 'C=1'"):
        parse_param("C=1")


def test_bad_dense_settings_are_named():
    X, y = blobs(5, seed=1)
    with pytest.raises(ConfigError, match=r"The 'optimizer' parameter of DenseHead must be a str among .*Got 'adagrad'"):
        _configured("dense", optimizer=["adagrad"]).fit(X, y)


@pytest.mark.parametrize("n_classes, units, spatial, shape", [
    (2, 16, "flatten", (12,)), (3, 0, "flatten", (12,)), (3, 8, "avg", (2, 2, 3)),
    (2, 0, "max", (2, 2, 3)), (3, 4, "flatten", (2, 2, 3))])
def test_the_dense_heads_numpy_probabilities_are_keras_to_1e5(tmp_path, n_classes, units, spatial, shape):
    from pipeline.heads import numpy_head
    from pipeline.heads.dense import DenseHead

    X, y = blobs(20, n_classes=n_classes, dim=int(np.prod(shape)), seed=3)
    X = X.reshape(len(X), *shape)
    head = DenseHead(units=units, spatial=spatial, epochs=3).fit(X, y)
    keras_p = head.model_.predict(X, verbose=0)
    np.testing.assert_allclose(head.numpy_(X), keras_p, atol=1e-5)
    head.save(tmp_path / "head.keras")
    from_file = numpy_head.read(tmp_path / "head.keras")
    assert from_file is not None
    np.testing.assert_allclose(from_file(X), keras_p, atol=1e-5)
    loaded = DenseHead.load(tmp_path / "head.keras", head.get_params(), head.classes_)
    assert "model_" not in loaded.__dict__  # Keras is not loaded for probabilities
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), atol=1e-5)
    assert loaded.model_.count_params() == head.model_.count_params()  # loaded when asked for


def test_a_keras_file_numpy_cannot_apply_is_loaded_with_keras(tmp_path):
    import keras

    from pipeline.heads import numpy_head
    from pipeline.heads.dense import DenseHead

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "odd.keras")
    assert numpy_head.read(tmp_path / "odd.keras") is None
    X = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    loaded = DenseHead.load(tmp_path / "odd.keras", {}, [0, 1])
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict(X, verbose=0), atol=1e-6)


def test_the_defaults_leave_out_the_trees_which_stay_one_flag_away():
    from pipeline import CompareConfig

    assert CompareConfig().classifiers == ("logreg", "dense", "linear_svm", "knn")
    assert "hist_gbdt" in CLASSIFIERS and not CLASSIFIERS["hist_gbdt"].default
    assert CompareConfig(classifiers=("hist_gbdt",)).classifiers == ("hist_gbdt",)
