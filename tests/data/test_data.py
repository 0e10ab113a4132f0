"""Finding images and assigning splits."""

import shutil

import pytest

from pipeline.config import SplitConfig
from pipeline.data import discover, unit_hash
from pipeline.errors import ConfigError, DataLayoutError

from conftest import make_dataset, write_image


def test_split_folders_with_aliases_and_sorted_classes(tmp_path):
    make_dataset(tmp_path, splits=("train", "val", "TEST"), per_class=3, classes=("dogs", "cats"))
    ds = discover(tmp_path)
    assert ds.layout == "splits"
    assert ds.classes == ("cats", "dogs")
    assert ds.counts() == {"train": 6, "validation": 6, "test": 6}
    path, label = ds.splits["train"][0]
    assert path == "train/cats/cats0.jpg" and label == 0
    assert all(ds.classes[label] in path for path, label in ds.splits["validation"])


def test_other_files_are_ignored_and_counted_and_extensions_any_case(tmp_path):
    make_dataset(tmp_path, per_class=2)
    (tmp_path / "train" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "train" / "cats" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "train" / "cats" / "notes.txt").write_text("hi")
    write_image(tmp_path / "train" / "dogs" / "UPPER.JPEG", fmt="JPEG")
    write_image(tmp_path / "train" / "dogs" / "pic.PNG", fmt="PNG")
    write_image(tmp_path / "train" / "dogs" / "old.bmp")
    write_image(tmp_path / "train" / "dogs" / "anim.gif")
    ds = discover(tmp_path)
    assert ds.counts()["train"] == 8
    assert set(ds.ignored) == {"train/.DS_Store", "train/cats/Thumbs.db", "train/cats/notes.txt"}


def test_class_folders_split_by_relative_path_hash(tmp_path):
    make_dataset(tmp_path / "a", splits=(), per_class=60)
    first = discover(tmp_path / "a")
    assert first.layout == "classes"
    counts = first.counts()
    assert set(counts) == {"train", "validation", "test"}
    assert sum(counts.values()) == 120
    assert 80 <= counts["train"] <= 110  # 80 % in expectation
    # Every image's split follows from its relative path alone.
    for split, items in first.splits.items():
        for path, _ in items:
            u = unit_hash(path)
            assert split == ("validation" if u < 0.1 else "test" if u < 0.2 else "train")
    # Moving the folder never reshuffles.
    shutil.move(tmp_path / "a", tmp_path / "moved")
    assert discover(tmp_path / "moved").splits == first.splits
    # Adding images never moves existing ones.
    for i in range(60, 90):
        write_image(tmp_path / "moved" / "cats" / f"cats{i}.jpg")
    grown = discover(tmp_path / "moved")
    for split, items in first.splits.items():
        assert set(items) <= set(grown.splits[split])


def test_fractions_are_configurable(tmp_path):
    make_dataset(tmp_path, splits=(), per_class=50)
    ds = discover(tmp_path, SplitConfig(validation_fraction=0.3, test_fraction=0.0))
    assert set(ds.splits) == {"train", "validation"}
    assert 15 <= ds.counts()["validation"] <= 45


def test_test_carved_from_validation_deterministically(tmp_path):
    make_dataset(tmp_path, per_class=40)
    plain = discover(tmp_path)
    assert "test" not in plain.splits
    carved = discover(tmp_path, SplitConfig(test_from_validation=0.2))
    again = discover(tmp_path, SplitConfig(test_from_validation=0.2))
    assert carved.splits == again.splits
    assert carved.splits["train"] == plain.splits["train"]
    assert set(carved.splits["validation"]) | set(carved.splits["test"]) == set(plain.splits["validation"])
    assert 4 <= carved.counts()["test"] <= 32


def test_class_missing_from_a_split_is_reported(tmp_path):
    make_dataset(tmp_path, splits=("train",), per_class=2, classes=("cats", "dogs", "owls"))
    make_dataset(tmp_path, splits=("validation",), per_class=2, classes=("cats", "dogs"))
    ds = discover(tmp_path)
    assert ds.classes == ("cats", "dogs", "owls")
    assert ds.missing == {"validation": ("owls",)}


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "found nothing"),
    (lambda p: write_image(p / "loose.jpg"), "found 1 files and no sub-folders"),
    (lambda p: (make_dataset(p, splits=("train",), per_class=1), (p / "cats").mkdir()),
     "split folders (train) mixed with other folders (cats)"),
    (lambda p: make_dataset(p, splits=("validation",), per_class=1), "but no train"),
    (lambda p: make_dataset(p, splits=(), per_class=3, classes=("cats",)), "at least two classes"),
    (lambda p: ((p / "cats").mkdir(), (p / "dogs").mkdir()), "No images found"),
    (lambda p: (make_dataset(p, splits=("train",), per_class=2, classes=("cats",)),
                make_dataset(p, splits=("validation",), per_class=2)),
     "The train split of"),
])
def test_bad_layouts_get_one_clear_message(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DataLayoutError, match="Fix:") as err:
        discover(tmp_path)
    assert message in str(err.value)


def test_missing_folder_message(tmp_path):
    with pytest.raises(DataLayoutError, match="does not exist or is not a folder"):
        discover(tmp_path / "nope")


def test_bad_fractions_rejected():
    with pytest.raises(ConfigError, match="must leave images for training"):
        SplitConfig(validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match=r"`test_from_validation` must be in \[0, 1\)"):
        SplitConfig(test_from_validation=1.5)
