"""Shared fixtures: tiny generated image folders, and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image

COLOURS = {"cats": (200, 60, 40), "dogs": (40, 60, 200), "owls": (60, 200, 40)}


def write_image(path: Path, colour=(128, 128, 128), size=(24, 32), seed: int = 0, fmt=None) -> Path:
    """A small noisy image of one colour (learnable by colour)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.normal(0, 25, (size[0], size[1], 3)) + colour).clip(0, 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_dataset(root: Path, splits=("train", "validation"), per_class=6,
                 classes=("cats", "dogs")) -> Path:
    """``root/<split>/<class>/<class>N.jpg`` (or ``root/<class>/...`` with splits=())."""
    for split in splits or ("",):
        for cls in classes:
            for i in range(per_class):
                write_image(root / split / cls / f"{cls}{i}.jpg", COLOURS[cls], seed=hash((split, cls, i)) % 2**32)
    return root


def keep_for_docs(shot: Path, name: str) -> None:
    """A browser test's screenshot, copied into ``$PIPELINE_SCREENSHOTS`` when it is set: the docs'
    pictures are the suite's (``PIPELINE_SCREENSHOTS=docs python -m pytest -k browser``), never by hand."""
    folder = os.environ.get("PIPELINE_SCREENSHOTS")
    if folder:
        Path(folder, name).write_bytes(shot.read_bytes())


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (real photos and weights), from PIPELINE_SHARED_DIR."""
    value = os.environ.get("PIPELINE_SHARED_DIR")
    if not value or not (Path(value) / "data" / "cats_and_dogs_filtered").is_dir():
        pytest.skip("real-data test: set PIPELINE_SHARED_DIR to the shared folder holding "
                    "data/cats_and_dogs_filtered (.ci/run does)")
    return Path(value)


@pytest.fixture(scope="session")
def imagenet_mobilenet(shared_dir) -> None:
    """The real MobileNet 0.25 weights must be in the Keras cache ($KERAS_HOME/models)."""
    from pipeline.backbones import keras_models_dir

    if not (keras_models_dir() / "mobilenet_2_5_224_tf_no_top.h5").is_file():
        pytest.skip(f"real-data test: copy {shared_dir}/weights/*.h5 into $KERAS_HOME/models "
                    "(.ci/run does)")


def blobs(n_per_class: int, n_classes: int = 2, dim: int = 16, seed: int = 0,
          separation: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters with fixed class centres: an easy problem for any classifier."""
    centres = np.random.default_rng(1234).normal(0, separation, (n_classes, dim))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(0, 1, (len(labels), dim))
    return features.astype("float32"), labels.astype("int32")


def write_feature_cache(path: Path, splits: dict, classes=("cats", "dogs")) -> Path:
    """A feature cache file in the stage-1 format, from ``{split: (features, labels)}``."""
    import h5py

    from pipeline.features.view import base_attrs

    key = {"format_version": 1, "backbone": "synthetic", "alpha": None, "weights": "none",
           "image_size": 32, "pooling": "avg", "preprocessing": "none", "decode": "full",
           "dtype": "float32", "classes": list(classes), "splits": {s: len(v[1]) for s, v in splits.items()}}
    from pipeline.features import checked

    text = h5py.string_dtype("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver=checked.LIBVER) as h5:
        for split, (features, labels) in splits.items():
            group = h5.create_group(split)
            checked.create(group, "features", features)
            checked.create(group, "labels", np.asarray(labels, np.int32))
            names = [f"{split}/{classes[c]}/{i}.jpg" for i, c in enumerate(labels)]
            checked.create(group, "paths", names, dtype=text)
            checked.create(group, "fingerprints", [f"{split[:1]}{i:031d}" for i in range(len(names))],
                           dtype=text)
            checked.create(group, "quarantine/paths", [], dtype=text)
            checked.create(group, "quarantine/reasons", [], dtype=text)
        for name, value in base_attrs(key, list(classes), path.parent, {}).items():
            h5.attrs[name] = value
        checked.seal(h5)
    return path


@pytest.fixture
def feature_cache(tmp_path) -> Path:
    """Train, validation and test splits of an easy 2-class problem."""
    return write_feature_cache(tmp_path / "features.h5", {
        "train": blobs(40, seed=1), "validation": blobs(20, seed=2), "test": blobs(20, seed=3)})


def _stage2(root, backbone: str):
    """A run folder whose dense head was trained on tiny-image features."""
    from pipeline import CompareConfig, ExtractConfig, compare, extract_features

    data = make_dataset(root / "data", splits=("train", "validation", "test"), per_class=8)
    config = ExtractConfig(backbone=backbone, weights="none", image_size=32, cache_dir=str(root / "cache"))
    cache = extract_features(data, config, progress=False)
    compare(cache.path, CompareConfig(classifiers=("logreg", "dense"), out=str(root / "run"),
                                      params={"dense": {"epochs": [20], "units": [16]}}))
    return root / "run"


@pytest.fixture(scope="session")
def stage2_run(tmp_path_factory):
    # VGG16: with random weights its features still vary from image to image,
    # where MobileNet's vanish (about 1e-18), so a wrong rebuild shows.
    return _stage2(tmp_path_factory.mktemp("vgg"), "vgg16")


@pytest.fixture(scope="session")
def mobilenet_run(tmp_path_factory):
    """MobileNet has BatchNormalization layers; VGG16 has none."""
    return _stage2(tmp_path_factory.mktemp("mobilenet"), "mobilenet")


@pytest.fixture
def run(stage2_run, tmp_path):
    """A fresh copy of the stage-2 run for each test that writes into it."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(stage2_run, copy)
    return copy


@pytest.fixture(scope="session")
def real_cache(shared_dir, imagenet_mobilenet, tmp_path_factory):
    from pipeline import ExtractConfig, extract_features

    config = ExtractConfig(backbone="mobilenet", alpha=0.25, image_size=224,
                           cache_dir=str(tmp_path_factory.mktemp("real-cache")))
    return extract_features(shared_dir / "data" / "cats_and_dogs_filtered", config)


@pytest.fixture(scope="session")
def real_run(real_cache, tmp_path_factory):
    """Every classifier compared on the real features; the run folder's result."""
    from pipeline import CompareConfig, compare

    return compare(real_cache.path, CompareConfig(out=str(tmp_path_factory.mktemp("real-run") / "run")))


def pytest_collection_modifyitems(config, items):
    """Every real-data test on one pytest-xdist worker (``--dist loadgroup``): the real features
    and the real run are session fixtures, built once per worker that needs them."""
    for item in items:
        if item.get_closest_marker("realdata"):
            item.add_marker(pytest.mark.xdist_group("realdata"))
