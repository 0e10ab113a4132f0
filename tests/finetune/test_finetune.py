"""Stage 3 on tiny images with random weights: hand-off, freezing, resume, outputs."""

import csv
import json
import logging

import numpy as np
import pytest

from pipeline import CompareConfig, compare
from pipeline.config import ExportConfig, FinetuneConfig, PredictConfig
from pipeline.errors import ConfigError, RunError
from pipeline.deploy.export import TOLERANCE, export
from pipeline.finetune import finetune
from pipeline.finetune.rebuild import open_source, rebuild, unfreeze
from pipeline.predict import predict


@pytest.fixture
def predicted(monkeypatch) -> list:
    """The datasets stage 3 predicts, in order (its validation split is one object throughout)."""
    import importlib

    train = importlib.import_module("pipeline.finetune.train")  # `pipeline.finetune` is the function
    seen, probabilities = [], train._probabilities
    monkeypatch.setattr(train, "_probabilities", lambda *a: seen.append(a[1]) or probabilities(*a))
    return seen


def test_a_correct_rebuild_passes_the_hand_off_and_fine_tunes(run, caplog, predicted):
    caplog.set_level(logging.INFO, logger="pipeline")
    result = finetune(run, FinetuneConfig(epochs=2, frozen_epochs=1, unfreeze_top=5, tensorboard=True,
                                          augment="flip,rotate=0.1,contrast=0.1", handoff_samples=8))
    assert result.handoff["max_abs_difference"] <= result.handoff["tolerance"] == 1e-4
    assert result.epochs == 3 and result.fine_tune_from == 1
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert [line.split(":")[0] for line in epochs] == [
        "frozen base epoch 1/1", "fine-tuning epoch 2/3", "fine-tuning epoch 3/3"]
    assert all("loss " in line and "accuracy " in line and "val_accuracy " in line for line in epochs)
    assert result.after >= result.before
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["models"]["finetuned"]["file"] == "models/finetuned.keras"
    board = json.loads((run / "leaderboard.json").read_text())
    assert [r["rank"] for r in board] == [1, 2, 3]
    assert "finetuned" in {r["classifier"] for r in board}
    assert "| finetuned |" in (run / "leaderboard.md").read_text()
    assert (run / "plots" / "finetune_history.png").is_file()
    history = (run / "finetune" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    # Validation is predicted again after training only when an epoch beat the start (then the test split).
    beaten = max(float(row["val_accuracy"]) for row in csv.DictReader(history)) > result.before
    assert result.improved == beaten and bool(result.kept_because) == (not beaten)
    assert [p is predicted[0] for p in predicted] == [True, *([True] if beaten else []), False]
    assert not list((run / "finetune").glob("backup-*"))
    assert list((run / "finetune" / "tensorboard").rglob("events.out.tfevents.*"))
    images = str(open_source(run, check_images=False).root / "test")
    predicted = predict(run, [images], PredictConfig(model="finetuned"))
    assert len(predicted.rows) == 16 and predicted.model == "finetuned"
    # Exported, it is its core: training-time augmentation (random ops without TFLite kernels) is left out.
    record = export(run, ExportConfig(model="finetuned", format="tflite", out=str(run / "export")))
    assert record["check"]["max_abs_difference"] <= TOLERANCE


def test_a_wrong_preprocessing_fails_the_hand_off_and_says_so(run):
    def tf_mode(x):  # MobileNet's [-1, 1] scaling, not VGG16's BGR mean subtraction
        return x / 127.5 - 1.0

    with pytest.raises(RunError, match=r"Hand-off check failed: .* What differs: preprocessing: stage 1 "
                                       r"used keras\.applications\.vgg16\.preprocess_input \(caffe\).*"
                                       r"Nothing was trained"):
        finetune(run, FinetuneConfig(epochs=1, handoff_samples=4), preprocess=tf_mode)
    assert "finetuned" not in json.loads((run / "manifest.json").read_text())["models"]


def test_frozen_layers_are_frozen_and_batchnorm_statistics_do_not_move(mobilenet_run):
    import keras

    source = open_source(mobilenet_run)
    config = FinetuneConfig(unfreeze_top=10)
    model, core, base, _ = rebuild(source, config)
    head_weights = len(source.head.model_.trainable_weights)
    base.trainable = False
    assert len(model.trainable_weights) == head_weights
    first = unfreeze(base, config)
    assert first == len(base.layers) - 10
    expected = sum(len(l.trainable_weights) for l in base.layers[first:]
                   if not isinstance(l, keras.layers.BatchNormalization))
    assert len(model.trainable_weights) == head_weights + expected > head_weights
    norms = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)]
    before = [v.numpy().copy() for l in norms for v in (l.moving_mean, l.moving_variance)]
    source.head.compile(model, 2, learning_rate=0.1)
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(pixels, np.array([0, 1] * 4), epochs=2, verbose=0)
    after = [v.numpy() for l in norms for v in (l.moving_mean, l.moving_variance)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_an_interrupted_fine_tune_resumes_from_its_last_epoch(run):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("killed")

    class Seen(keras.callbacks.Callback):
        epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    config = FinetuneConfig(epochs=4, patience=10, handoff_samples=4)
    with pytest.raises(KeyboardInterrupt):
        finetune(run, config, callbacks=(Crash(),))
    assert list((run / "finetune").glob("backup-finetune"))
    result = finetune(run, config, callbacks=(Seen(),))
    assert Seen.epochs == [2, 3]  # epochs 0 and 1 were not run again
    assert result.epochs == 4


def test_augmentation_text_is_checked():
    from pipeline.finetune.augment import augmentation

    assert [type(l).__name__ for l in augmentation("flip,rotate=0.2,zoom=0.1,translate,shear=0.2,contrast=0.3").layers] == \
        ["RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear", "RandomContrast"]
    assert augmentation("none").layers == []
    assert augmentation("flip=vertical").layers[0].mode == "vertical"
    with pytest.raises(ConfigError, match=r"`--augment flip=` must be one of horizontal, vertical, "
                                          r"horizontal_and_vertical\. Got 'sideways'"):
        augmentation("flip=sideways")
    with pytest.raises(ConfigError, match=r"`augment` takes flip, rotate, zoom, translate, shear, contrast .* "
                                          r"Got 'skew'"):
        augmentation("flip,skew=0.2")
    with pytest.raises(ConfigError, match=r"`--augment zoom=` must be a number\. Got 'big'"):
        augmentation("zoom=big")


def test_layer_names_and_indices_are_checked(stage2_run):
    source = open_source(stage2_run)
    _, _, base, _ = rebuild(source, FinetuneConfig())
    with pytest.raises(ConfigError, match=r"`unfreeze_from` 'block5_covn1' is not a layer of vgg16\. "
                                          r"Nearest names: block5_conv1"):
        unfreeze(base, FinetuneConfig(unfreeze_from="block5_covn1"))
    with pytest.raises(ConfigError, match=rf"`unfreeze_from` 999 is beyond the base: vgg16 has {len(base.layers)} layers"):
        unfreeze(base, FinetuneConfig(unfreeze_from=999))
    first = unfreeze(base, FinetuneConfig(unfreeze_from="block5_conv1"))
    names = [layer.name for layer in base.layers]
    assert first == names.index("block5_conv1")
    assert [l.name for l in base.layers if l.trainable_weights] == ["block5_conv1", "block5_conv2", "block5_conv3"]


def test_a_run_without_a_dense_head_is_refused(tmp_path, feature_cache):
    result = compare(feature_cache, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "r")))
    with pytest.raises(RunError, match=r"has no dense head \(it has logreg\).*`--classifiers \.\.\.,dense`"):
        finetune(result.run_dir)


def test_images_that_changed_since_extraction_are_refused(run):
    source_root = open_source(run, check_images=False).root
    victim = sorted((source_root / "train" / "cats").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    try:
        with pytest.raises(RunError, match=r"are not the ones the cache was made from: 0 of 48 are missing "
                                           r"and 1 changed .*Fix: pass the original folder with `--data DIR`"):
            finetune(run, FinetuneConfig(epochs=1))
    finally:
        victim.write_bytes(victim.read_bytes()[:-1])


def test_mixed_precision_trains_a_float16_base_after_a_float32_hand_off(run):
    import keras

    result = finetune(run, FinetuneConfig(epochs=1, unfreeze_top=4, mixed_precision="mixed_float16",
                                          handoff_samples=4, augment="none"))
    assert result.handoff["max_abs_difference"] <= 1e-4  # checked before switching precision
    assert result.row["params"]["mixed_precision"] == "mixed_float16"
    saved = keras.models.load_model(run / "models" / "finetuned.keras")
    policies = {layer.dtype_policy.name for layer in _all_layers(saved)
                if isinstance(layer, keras.layers.Conv2D)}
    assert policies == {"mixed_float16"}
    assert saved.output.dtype == "float32"  # the head computes and answers in float32


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_a_discriminative_rate_scales_only_the_base_updates(optimizer):
    import keras

    from pipeline.heads.dense import DenseHead

    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    changed = {}
    for factor in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="b1")], name="base")
        model = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(1, activation="sigmoid")])
        start = [w.numpy().copy() for w in model.weights]
        DenseHead(optimizer=optimizer, learning_rate=0.1).compile(
            model, 2, steps_per_execution=1, slower=(frozenset(v.path for v in base.weights), factor))
        model.fit(x, y, epochs=2, verbose=0)
        changed[factor] = [not np.array_equal(a, w.numpy()) for a, w in zip(start, model.weights)]
    assert changed[0.0] == [False, False, True, True]  # base still, head trained
    assert changed[1.0] == [True, True, True, True]


def test_fine_tuning_with_a_base_rate_saves_a_plain_keras_model(run, monkeypatch, predicted):
    import importlib

    import keras

    train = importlib.import_module("pipeline.finetune.train")  # `pipeline.finetune` is the function
    fine_tune = train._Training._fine_tune

    def no_better_epoch(self, before, done):
        fine_tune(self, before, done)
        self.best.unlink(missing_ok=True)

    monkeypatch.setattr(train._Training, "_fine_tune", no_better_epoch)
    result = finetune(run, FinetuneConfig(epochs=1, unfreeze_top=4, learning_rate=1e-3,
                                          base_learning_rate=1e-5, handoff_samples=4))
    assert result.row["params"]["base_learning_rate"] == 1e-5
    saved = keras.models.load_model(run / "models" / "finetuned.keras")  # no custom objects needed
    assert type(saved.optimizer).__name__ == "Adam"
    # The start is kept, so its validation predictions are too: validation is predicted once, then test.
    assert len(predicted) == 2 and predicted[0] is not predicted[1] and result.after == result.before


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline.config import FinetuneConfig
from pipeline.finetune import finetune
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = finetune(sys.argv[1], FinetuneConfig(epochs=1, unfreeze_top=4, base_learning_rate=0.0,
                                              learning_rate=1e-3, handoff_samples=4), strategy=strategy)
print("replicas", strategy.num_replicas_in_sync, "epochs", result.epochs)
"""


def test_fine_tuning_runs_under_a_mirrored_strategy(run):
    """What several GPUs get, on two logical CPUs: variables made, loaded and trained in scope."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MIRRORED, str(run)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 epochs 1" in done.stdout
    assert (run / "models" / "finetuned.keras").is_file()


def test_a_run_folder_holding_a_user_s_file_is_refused_before_training(run, monkeypatch):
    import importlib

    train = importlib.import_module("pipeline.finetune.train")  # `pipeline.finetune` is the function
    monkeypatch.setattr(train, "open_source", lambda *a, **k: pytest.fail("started before refusing"))
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"also holds files this tool did not write \(notes.txt\), "
                                          r"so nothing is added to it. Fix: move them out of it\."):
        finetune(run, FinetuneConfig(epochs=1))
    assert (run / "notes.txt").read_text() == "mine"
