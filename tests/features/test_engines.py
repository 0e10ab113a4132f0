"""Engines: Keras and OpenVINO run the same network, give the same float32 features, share rows."""

import logging

import numpy as np
import pytest

from pipeline import ExtractConfig, extract_features
from pipeline import backbones
from pipeline.errors import ConfigError
from pipeline.features import engines

from conftest import make_dataset, write_image

ov = pytest.importorskip("openvino")


def config(cache, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 8,
                            "cache_dir": str(cache), **kwargs})


def features(result):
    cache = result.open()
    return np.concatenate([cache.load(s).features for s in cache.splits])


def test_auto_is_openvino_on_a_cpu_once_conversion_pays_and_keras_beside_a_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(engines, "_gpu_visible", lambda: False)
    assert engines.choose("auto", images=engines.AUTO_MIN_IMAGES) == "openvino"
    assert engines.choose("auto", images=10, folder=tmp_path) == "keras"  # conversion would not pay
    kept = tmp_path / f"openvino-{ov.__version__.split('-')[0]}" / "model.xml"
    kept.parent.mkdir()
    kept.write_text("<net/>")
    assert engines.choose("auto", images=10, folder=tmp_path) == "openvino"  # converted already
    assert engines.choose("keras") == "keras" and engines.choose("openvino", images=1) == "openvino"
    monkeypatch.setattr(engines, "_gpu_visible", lambda: True)
    assert engines.choose("auto") == "keras" and engines.choose("openvino") == "openvino"


def test_engine_messages(monkeypatch):
    with pytest.raises(ConfigError, match=r"`--precision bf16` runs on the OpenVINO engine. Fix: pass "
                                          r"`--engine openvino`"):
        engines.choose("keras", "bf16")
    with pytest.raises(ConfigError, match=r"`engine` must be one of auto, keras, openvino"):
        ExtractConfig(engine="tensorrt")
    monkeypatch.setattr(engines, "_openvino", lambda: None)
    assert engines.choose("auto") == "keras"
    with pytest.raises(ConfigError, match=r"`--engine openvino` needs the openvino package"):
        engines.choose("openvino")


@pytest.mark.parametrize("backbone", ["vgg16"])
def test_openvino_gives_the_keras_features_and_shares_their_rows(tmp_path, backbone):
    # VGG16's random-weight features vary from image to image (MobileNet's nearly vanish);
    # MobileNet is compared on real photos with its real weights in test_realdata.py.
    data = make_dataset(tmp_path / "data", per_class=4)
    keras_run = extract_features(data, config(tmp_path / "a", backbone=backbone, engine="keras"))
    ov_run = extract_features(data, config(tmp_path / "b", backbone=backbone, engine="openvino"))
    assert keras_run.path.name == ov_run.path.name  # the engine is not in the spec
    assert ov_run.open().extraction["engine"].startswith("openvino")
    assert keras_run.open().extraction["engine"] == "keras"
    ours, theirs = features(ov_run), features(keras_run)
    scale = np.abs(theirs).max()
    assert scale > 0 and np.abs(ours - theirs).max() <= 1e-4 * scale
    # Float32 engines share rows: switching engine over the same store computes nothing.
    again = extract_features(data, config(tmp_path / "a", backbone=backbone, engine="openvino"))
    assert again.hit and again.computed == 0


def test_the_converted_model_is_kept_and_converted_once_per_spec(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=3)
    first = extract_features(data, config(tmp_path / "cache", engine="openvino"))
    assert first.open().extraction["conversion_seconds"] > 0
    assert list((tmp_path / "cache" / "store").glob("*/openvino-*/model.xml"))
    calls = []
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    write_image(data / "train" / "cats" / "new.jpg", seed=5)
    second = extract_features(data, config(tmp_path / "cache", engine="openvino"))
    assert second.computed == 1 and calls == []


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "no checksums"])
def test_a_kept_model_that_does_not_match_its_checksums_is_converted_again(tmp_path, monkeypatch, caplog,
                                                                          damage):
    # A damaged kept model gave wrong features (a third of the scale off) under the spec's name.
    data = make_dataset(tmp_path / "data", per_class=2)
    settings = {"backbone": "vgg16", "engine": "openvino"}
    extract_features(data, config(tmp_path / "cache", **settings))
    kept = engines.kept_model(next((tmp_path / "cache" / "store").iterdir())).parent
    raw = bytearray((kept / "model.bin").read_bytes())
    if damage == "flipped bytes":
        for at in range(3, len(raw), len(raw) // 64 & ~3):
            raw[at] ^= 0x40  # a bit of a float's exponent
        (kept / "model.bin").write_bytes(bytes(raw))
    elif damage == "truncated":
        (kept / "model.bin").write_bytes(bytes(raw[:len(raw) // 2]))
    else:
        (kept / "checksums.json").unlink()  # as a folder kept by an older version
    calls = []
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    write_image(data / "train" / "cats" / "new.jpg", seed=5)
    with caplog.at_level(logging.WARNING):
        damaged = extract_features(data, config(tmp_path / "cache", **settings))
    assert damaged.computed == 1 and calls == [1]
    assert f"the converted model kept in {kept} does not match the checksums saved with it (" in caplog.text
    fresh = extract_features(data, config(tmp_path / "fresh", **settings))
    np.testing.assert_array_equal(features(damaged), features(fresh))
    # Kept again, whole and checked: the next run converts nothing.
    calls.clear()
    write_image(data / "train" / "dogs" / "new.jpg", seed=6)
    assert extract_features(data, config(tmp_path / "cache", **settings)).computed == 1 and calls == []


def test_auto_converts_once_a_store_grown_a_few_photos_at_a_time_reaches_the_threshold(
        tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "_gpu_visible", lambda: False)
    monkeypatch.setattr(engines, "AUTO_MIN_IMAGES", 10)
    data = make_dataset(tmp_path / "data", per_class=2)  # 8 images: fewer than 10
    first = extract_features(data, config(tmp_path / "cache"))
    assert first.open().extraction["engine"] == "keras"
    write_image(data / "train" / "cats" / "new.jpg", seed=5)  # 1 to compute, 8 rows held: 9
    assert extract_features(data, config(tmp_path / "cache")).open().extraction["engine"] == "keras"
    write_image(data / "train" / "dogs" / "new.jpg", seed=6)  # 1 to compute, 9 rows held: 10
    third = extract_features(data, config(tmp_path / "cache"))
    assert third.computed == 1 and third.open().extraction["engine"].startswith("openvino")
    assert list((tmp_path / "cache" / "store").glob("*/openvino-*/model.xml"))  # kept for the next


def test_a_backbone_openvino_cannot_convert_falls_back_to_keras(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation FancyOp")

    monkeypatch.setattr(ov, "convert_model", broken)
    data = make_dataset(tmp_path / "data", per_class=2)
    with caplog.at_level(logging.WARNING):
        result = extract_features(data, config(tmp_path / "cache", engine="openvino"))
    assert result.open().extraction["engine"] == "keras" and result.computed == 8
    assert ("OpenVINO could not convert mobilenet (unsupported operation FancyOp); running it with "
            "Keras/TensorFlow instead") in caplog.text


def test_bf16_is_refused_where_openvino_lists_no_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)  # any CPU, as one without
    data = make_dataset(tmp_path / "data", per_class=2)
    with pytest.raises(ConfigError, match=r"`--precision bf16`: this CPU has no bfloat16 units"):
        extract_features(data, config(tmp_path / "cache", precision="bf16"))


@pytest.mark.skipif(not engines.cpu_has_bf16(), reason="this CPU has no bfloat16 units (OpenVINO's "
                                                       "OPTIMIZATION_CAPABILITIES lists no BF16)")
def test_bf16_is_a_spec_of_its_own_where_the_cpu_has_it(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    f32 = extract_features(data, config(tmp_path / "cache"))
    bf16 = extract_features(data, config(tmp_path / "cache", precision="bf16"))
    assert bf16.path != f32.path and bf16.computed == 8


def test_the_engine_is_built_run_and_dropped_200_times_without_a_hang(tmp_path):
    # MobileNet 0.25: compiled in half VGG16's time, and the drop is the same.
    spec = backbones.resolve("mobilenet", image_size=32, pooling="avg", weights="none")
    pixels = np.zeros((6, 32, 32, 3), "float32")
    for _ in range(200):  # the converted model is kept in tmp_path after the first
        engine = engines.OpenVINOEngine(spec, seed=0, batch_size=2, folder=tmp_path)
        out = engine.map([(np.arange(i, i + 2), pixels[i:i + 2]) for i in (0, 2, 4)])
        assert list(next(out)[0]) == [0, 1]
        del out, engine  # dropped with requests in flight


def test_the_last_keras_network_is_kept_for_its_spec_and_weights_and_built_anew_when_they_change(
        tmp_path, monkeypatch):
    import tensorflow as tf

    built = []
    build = backbones.build
    monkeypatch.setattr(backbones, "build", lambda spec, **kw: built.append(spec) or build(spec, **kw))
    engines._last_forward.cache_clear()  # another test's network may be kept in this process
    path = tmp_path / "quarter.weights.h5"
    quarter = backbones.resolve("mobilenet", image_size=32, weights="none")
    build(quarter, seed=1).layers[-1].save_weights(path)
    spec = backbones.resolve("mobilenet", image_size=32, weights=str(path))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    first = engines.KerasEngine(spec, seed=0)
    again = engines.KerasEngine(spec, seed=0)
    assert again.forward is first.forward and len(built) == 1  # neither built nor traced again
    # The same path with other weights in it, resolved again as each call does: built anew, and
    # its features are the new weights'.
    changed = build(quarter, seed=2)
    changed.layers[-1].save_weights(path)
    spec = backbones.resolve("mobilenet", image_size=32, weights=str(path))
    anew = engines.KerasEngine(spec, seed=0)
    assert len(built) == 2
    np.testing.assert_allclose(anew.forward(pixels).numpy(), changed.predict(pixels, verbose=0), rtol=1e-5,
                               atol=0)
    # (MobileNet's random-weight features are about 1e-16: compared relatively.)
    assert not np.allclose(anew.forward(pixels).numpy(), first.forward(pixels).numpy(), rtol=1e-3, atol=0)
    # Under a multi-GPU strategy nothing is kept: each network is built in that strategy's scope.
    monkeypatch.setattr(backbones, "gpu_strategy", lambda: tf.distribute.get_strategy())
    engines.KerasEngine(spec, seed=0)
    engines.KerasEngine(spec, seed=0)
    assert len(built) == 4


@pytest.fixture(scope="module")
def small_engine():
    """OpenVINO running a random-weight VGG16 at 32 px, batches of 4."""
    spec = backbones.resolve("vgg16", image_size=32, pooling="avg", weights="none")
    return engines.OpenVINOEngine(spec, seed=0, batch_size=4)


def test_openvino_threads_are_not_pinned_to_cores(small_engine):
    # The decoders run on the same cores; pinned inference threads could not make way for them.
    assert small_engine.compiled.get_property("ENABLE_CPU_PINNING") is False


def test_a_short_last_batch_is_padded_and_its_rows_match_a_full_one(small_engine):
    engine = small_engine
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    out = list(engine.map([(np.arange(4), pixels[:4]), (np.arange(4, 6), pixels[4:])]))
    assert [len(f) for _, f in out] == [4, 2] and [list(i) for i, _ in out] == [[0, 1, 2, 3], [4, 5]]
    alone = list(engine.map([(np.arange(4), pixels[2:6])]))[0][1]
    np.testing.assert_allclose(out[1][1], alone[2:], rtol=1e-5, atol=1e-5)


def test_batches_in_flight_stay_alive_while_openvino_reads_them(small_engine):
    """OpenVINO reads each batch where it lies (no copy): every batch in flight stays alive,
    even one its caller has let go of, and the features are those of one batch at a time."""
    import weakref

    engine = small_engine
    assert engine.requests >= 2  # so that batches are in flight together
    pixels = np.random.default_rng(1).uniform(0, 255, (40, 32, 32, 3)).astype("float32")
    alone = [list(engine.map([(np.arange(i, i + 4), pixels[i:i + 4])]))[0][1] for i in range(0, 40, 4)]
    given = []  # weak references: only the engine holds a batch once it is yielded

    def fresh():
        for i in range(0, 40, 4):
            batch = pixels[i:i + 4].copy()
            given.append(weakref.ref(batch))
            yield np.arange(i, i + 4), batch
            del batch

    for n, (_, got) in enumerate(engine.map(fresh())):
        assert all(ref() is not None for ref in given[n + 1:]), f"a batch in flight was freed at {n}"
        np.testing.assert_array_equal(got, alone[n])


# int8: the network quantized by NNCF once per feature spec, on the dataset's own images.

@pytest.fixture(scope="module")
def int8_extraction(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    data = make_dataset(folder / "data", per_class=10)  # 40 images: enough to calibrate
    int8 = extract_features(data, config(folder / "cache", backbone="vgg16", precision="int8"))
    f32 = extract_features(data, config(folder / "cache", backbone="vgg16"))
    return folder, data, int8, f32


def test_int8_is_a_spec_of_its_own_quantized_once_on_the_datasets_images(int8_extraction, caplog):
    import json
    import shutil

    from pipeline.features.view import FeatureCache

    folder, data, int8, f32 = int8_extraction
    assert int8.path != f32.path and int8.computed == 40 and f32.computed == 40
    store = FeatureCache(int8.path).store
    (kept,) = (int8.path.parent / store).glob("openvino-*-int8")
    record = json.loads((kept / "calibration.json").read_text())
    digests = {fp for s in ("train", "validation") for fp in FeatureCache(int8.path).index(s).fingerprints}
    assert len(record["images"]) == 40 and set(record["images"]) == digests
    assert record["fast_bias_correction"] is False and record["nncf"]
    from pipeline.features.quantize import calibration_of

    assert calibration_of(FeatureCache(int8.path)) == record
    (kept / "calibration.json").write_text(json.dumps({**record, "images": record["images"][:3]}))
    assert calibration_of(FeatureCache(int8.path)) is None  # an edited record is not served
    (kept / "calibration.json").write_text(json.dumps(record, indent=1))  # as it was written
    a, b = FeatureCache(int8.path).load("train"), FeatureCache(f32.path).load("train")
    distance = np.linalg.norm(a.features - b.features, axis=1) / np.linalg.norm(b.features, axis=1)
    assert 0 < np.median(distance) < 0.2  # other numbers, close to float32's
    renamed = folder / "renamed"
    shutil.copytree(data, renamed)
    for photo in sorted(renamed.rglob("*.jpg")):
        photo.rename(photo.with_name("new-" + photo.name))
    caplog.set_level(logging.INFO)
    again = extract_features(renamed, config(folder / "cache", backbone="vgg16", precision="int8"))
    assert again.computed == 0 and again.reused == 40 and "quantizing" not in caplog.text


def test_predict_on_an_int8_run_uses_the_kept_int8_model(int8_extraction, tmp_path, capsys):
    import json
    import shutil

    from pipeline import CompareConfig, compare
    from pipeline.cli import main
    from pipeline.features.view import FeatureCache
    from pipeline.runs import load_model

    folder, data, int8, _ = int8_extraction
    run = compare(int8.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run"))).run_dir
    assert main(["predict", "--run", str(run), str(data / "train" / "cats"), "--json"]) == 0
    predicted = {r["path"]: r["probabilities"]["cats"] for r in json.loads(capsys.readouterr().out)["predictions"]}
    stored = FeatureCache(int8.path).load("train")
    model = load_model(run, "logreg")
    for path, features in zip(stored.paths, stored.features):
        if path.startswith("train/cats/"):
            expected = model.predict_proba(features[None])[0][0]
            assert abs(predicted[str(data / path)] - expected) < 1e-3
    (kept,) = (int8.path.parent / FeatureCache(int8.path).store).glob("openvino-*-int8")
    aside = tmp_path / "aside"
    shutil.move(kept, aside)
    try:
        assert main(["predict", "--run", str(run), str(data / "train" / "cats")]) == 2
        assert "The int8 model of this feature spec is not kept in" in capsys.readouterr().err
    finally:
        shutil.move(aside, kept)


def test_int8_refusals_come_before_any_work(tmp_path, monkeypatch):
    small = make_dataset(tmp_path / "small", per_class=3)  # 12 images
    with pytest.raises(ConfigError, match=r"`--precision int8` calibrates on at least 32 readable images "
                                          r"of the dataset; it has 12\. Fix:"):
        extract_features(small, config(tmp_path / "cache", precision="int8"))
    assert not list((tmp_path / "cache").glob("store/*/openvino-*"))  # nothing converted
    with pytest.raises(ConfigError, match=r"`--precision int8` runs on the OpenVINO engine"):
        extract_features(small, config(tmp_path / "cache", precision="int8", engine="keras"))
    data = make_dataset(tmp_path / "data", per_class=10)
    monkeypatch.setitem(__import__("sys").modules, "nncf", None)  # as where it is not installed
    with pytest.raises(ConfigError, match=r"`--precision int8` needs NNCF, OpenVINO's quantizer\. Fix: "):
        extract_features(data, config(tmp_path / "cache", precision="int8"))


def test_compare_precision_says_what_int8_costs_beside_float32(int8_extraction, capsys):
    from pipeline.cli import main

    folder, data, _, _ = int8_extraction
    args = ["extract", "--data", str(data), "--backbone", "vgg16", "--weights", "none", "--image-size", "32",
            "--cache-dir", str(folder / "cache"), "--batch-size", "4", "--chunk-size", "8",
            "--precision", "int8", "--compare-precision", "--json"]
    assert main(args) == 0
    import json

    cost = json.loads(capsys.readouterr().out)["precision_cost"]
    assert cost["precision"] == "int8" and cost["validation_images"] == 20
    lo, hi = cost["difference_interval"]
    assert lo <= cost["difference_points"] <= hi and 0 <= cost["mcnemar_p"] <= 1
    assert 0 < cost["feature_distance_median"] < 0.2
    assert cost["speedup"] is None  # both views were in the store: nothing extracted, no speed
    assert "(float32's rows came from the store, so no speed is compared)" in cost["sentence"]
    assert main(args[:-4] + ["--compare-precision"]) == 2  # float32 against itself
    assert "`--compare-precision` compares bf16 or int8 features with float32's" in capsys.readouterr().err


def test_the_precision_cost_is_in_the_leaderboard_and_report_of_every_run_on_that_view(
        int8_extraction, tmp_path, capsys):
    import html
    import json
    import os

    from pipeline import CompareConfig, compare
    from pipeline.cli import main

    folder, data, int8, _ = int8_extraction
    args = ["extract", "--data", str(data), "--backbone", "vgg16", "--weights", "none", "--image-size", "32",
            "--cache-dir", str(folder / "cache"), "--batch-size", "4", "--chunk-size", "8",
            "--precision", "int8", "--compare-precision", "--json"]
    assert main(args) == 0
    sentence = json.loads(capsys.readouterr().out)["precision_cost"]["sentence"]
    kept = int8.path.with_name(int8.path.stem + ".precision.json")
    run = compare(int8.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run"))).run_dir
    said = f"Measured by `extract --compare-precision`: {sentence}"
    assert said in (run / "leaderboard.md").read_text()
    assert said in html.unescape((run / "report.html").read_text())
    assert json.loads((run / "manifest.json").read_text())["precision_cost"]["sentence"] == sentence
    record = json.loads(kept.read_text())
    kept.write_text(json.dumps({**record, "cost": {**record["cost"], "sentence": record["cost"]["sentence"]
                                                    .replace("+0.0 points", "+9.0 points")}}))  # a byte flipped
    flipped = compare(int8.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "flipped"))).run_dir
    assert "compare-precision" not in (flipped / "leaderboard.md").read_text()
    record["view_key_hash"] = "0" * 16  # kept for another view
    kept.write_text(json.dumps(record))
    other = compare(int8.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "other"))).run_dir
    assert "compare-precision" not in (other / "leaderboard.md").read_text()
    kept.unlink()
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({**record, "view_key_hash": json.loads(
        (run / "manifest.json").read_text())["cache"]["key_hash"]}))
    os.symlink(elsewhere, kept)  # a link planted in the cache folder is never read
    linked = compare(int8.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "linked"))).run_dir
    assert "compare-precision" not in (linked / "leaderboard.md").read_text()


@pytest.mark.parametrize("model", ["logreg", "dense"])
def test_an_int8_run_exports_its_int8_network_with_the_head(int8_extraction, tmp_path, capsys, model):
    import json

    from pipeline import CompareConfig, compare
    from pipeline.cli import main

    folder, data, int8, _ = int8_extraction
    run = compare(int8.path, CompareConfig(classifiers=(model,), out=str(tmp_path / "run"),
                                           params={"dense": {"epochs": [3]}} if model == "dense" else {})).run_dir
    out = tmp_path / "exported"
    assert main(["export", "--run", str(run), "--model", model, "--format", "openvino", "--out", str(out),
                 "--images", "8"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["calibration"]["images"]) == 40  # what calibrated the rows, in the run
    assert "quantized to int8 by NNCF" in (run / "report.html").read_text()
    check = json.loads((out / "export.json").read_text())[f"{model}.xml"]["check"]
    assert check["max_abs_difference"] < 1e-4  # the int8 network predict ran, and its head
    assert main(["export", "--run", str(run), "--model", model, "--format", "keras",
                 "--out", str(tmp_path / "other")]) == 2
    assert "`--format keras` would carry float32 weights, not the int8 network" in capsys.readouterr().err
