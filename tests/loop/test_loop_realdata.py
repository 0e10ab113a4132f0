"""The labelling loop on the shared photos' real features (MobileNet 0.25, ImageNet weights)."""

import os
import shutil

import matplotlib
import numpy as np
import pytest
import sklearn.datasets
from PIL import Image
from scipy import stats

from pipeline import DriftConfig, ReplayConfig, SuggestConfig, drift, replay, suggest
from pipeline.features import FeatureCache
from pipeline.loop.drift import mmd_test

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_margin_beats_random_at_20_and_160_labels_on_the_real_photos(real_cache):
    result = replay(real_cache.path, ReplayConfig(strategies=("margin",), seeds=10))
    difference, low, _, p = result.against_random("margin")
    at = {b: i for i, b in enumerate(result.budgets)}
    assert difference[at[20]] > 0 and difference[at[160]] > 0
    assert low[at[160]] > 0  # paired over the 10 seeds, not chance
    assert result.recommended == "margin"
    assert result.labels_saved()[-1]["saved"] > 0
    assert 0.9 < result.all_labels < 1.0


def test_p_values_of_held_back_photos_against_the_training_photos_are_uniform(real_cache):
    """30 batches of 50 validation photos, each tested against the 2000 training photos."""
    cache = FeatureCache(real_cache.path)
    train, validation = cache.load("train").features, cache.load("validation").features
    rng = np.random.default_rng(0)
    p = np.array([mmd_test(train, validation[rng.choice(len(validation), 50, replace=False)], 200,
                           seed=i)[1] for i in range(30)])
    assert stats.kstest(p, "uniform").pvalue > 0.01 and (p < 0.01).sum() <= 2


def _other_subjects(folder, n=30):
    """Square crops of the photos that ship with scikit-learn and matplotlib: no cat, no dog."""
    sources = [os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)
               for name in ("china.jpg", "flower.jpg")]
    sources.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        with Image.open(sources[k % 3]) as image:
            image = image.convert("RGB")
            w, h = image.size
            side = int(min(w, h) * (0.5 + 0.05 * (k // 3)))
            x, y = (w - side) * (k // 3) // 9, (h - side) * ((k * 7) % 10) // 9
            image.crop((x, y, x + side, y + side)).save(folder / f"other{k:02d}.jpg")
    return folder


def _held_back(shared_dir, folder, n=30):
    folder.mkdir(parents=True, exist_ok=True)
    for cls in ("cats", "dogs"):
        for path in sorted((shared_dir / "data" / "cats_and_dogs_filtered" / "validation" / cls).iterdir())[:n]:
            shutil.copy(path, folder / path.name)
    return folder


def test_held_back_photos_are_not_drifted_and_other_subjects_are_the_most_novel(
        real_run, shared_dir, tmp_path):
    same = _held_back(shared_dir, tmp_path / "same")
    result = drift(real_run.run_dir, same, DriftConfig(permutations=500))
    assert not result.drifted and result.images == 60
    mixed = _held_back(shared_dir, tmp_path / "mixed")
    _other_subjects(mixed)
    shifted = drift(real_run.run_dir, mixed, DriftConfig(permutations=500))
    assert shifted.drifted and shifted.images == 90
    assert all("other" in n["path"] for n in shifted.novel)  # the 10 most novel
    assert all(n["beyond_training"] for n in shifted.novel)
    pool = suggest(real_run.run_dir, mixed, SuggestConfig(n=10))
    assert pool.already_labelled == 60  # the validation photos are labelled in the run
    assert all("other" in s["path"] for s in pool.suggestions)
