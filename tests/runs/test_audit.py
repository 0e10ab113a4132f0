"""The data audit finds what was planted: copies across splits and a flipped label."""

import numpy as np

from pipeline.runs import audit


def _features(n: int, label: int, rng) -> np.ndarray:
    """Distinct images (near-orthogonal noise) with a clear class signal."""
    x = rng.normal(0, 1, (n, 64))
    x[:, label] += 6.0
    return x.astype("float32")


def _splits(rng):
    splits = {}
    for split, n in (("train", 60), ("validation", 20), ("test", 20)):
        feats = np.concatenate([_features(n, 0, rng), _features(n, 1, rng)])
        labels = np.repeat([0, 1], n)
        paths = [f"{split}/{'cats' if c else 'dogs'}/{i}.jpg" for i, c in enumerate(labels)]
        splits[split] = {"features": feats, "labels": labels, "paths": paths,
                         "fingerprints": [f"{split}-{i}" for i in range(len(labels))]}
    return splits


def test_planted_copies_across_splits_and_a_flipped_label_are_reported():
    rng = np.random.default_rng(0)
    splits = _splits(rng)
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    validation["features"][3] = train["features"][0]            # the same photo: same bytes
    validation["fingerprints"][3] = train["fingerprints"][0]
    test["features"][5] = train["features"][1] * 1.05 + rng.normal(0, 0.05, 64)  # resized re-encode
    train["labels"][7] = 1 - train["labels"][7]                 # a flipped label
    found = audit.audit(splits, ["dogs", "cats"], seed=0)

    pairs = {(p["a"], p["b"]): p for p in found["near_duplicates"]}
    exact = pairs[(train["paths"][0], validation["paths"][3])]
    assert exact["exact"] and exact["cross_split"] and exact["similarity"] == 1.0
    near = pairs[(train["paths"][1], test["paths"][5])]
    assert not near["exact"] and near["cross_split"] and near["similarity"] > 0.99
    assert found["cross_split_pairs"] == 2 and len(pairs) == 2, "nothing else is a copy"

    issues = found["suspected_label_errors"]["issues"]
    flipped = next(i for i in issues if i["path"] == train["paths"][7])
    assert flipped["given"] == "cats" and flipped["suggested"] == "dogs"
    assert len(issues) <= 3
    assert found["class_balance"]["train"] == {"dogs": 59, "cats": 61}


def test_too_few_images_per_class_skip_the_label_check_and_say_why():
    rng = np.random.default_rng(1)
    splits = {"train": {"features": _features(3, 0, rng), "labels": np.array([0, 0, 1]),
                        "paths": ["a", "b", "c"], "fingerprints": None}}
    found = audit.audit(splits, ["dogs", "cats"])
    assert found["suspected_label_errors"]["skipped"] == (
        "every class needs at least 2 images for cross-validation")
    assert found["near_duplicates"] == []
