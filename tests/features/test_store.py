"""The feature store: the backbone runs once per image content, whatever happens to the dataset."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import ExtractConfig, FeatureCache, extract_features
from pipeline.cli import main
from pipeline.config import SplitConfig
from pipeline.features import hashing
from pipeline.errors import CacheError
from pipeline.features.manage import collect_garbage, list_cache
from pipeline.features.store import FeatureStore

from conftest import make_dataset, write_image

ROOT = Path(__file__).resolve().parents[2]


def config(cache, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 4,
                            "cache_dir": str(cache), **kwargs})


def rows(result) -> dict[str, tuple[int, np.ndarray]]:
    """path -> (label, features), over every split of a view."""
    cache = result.open()
    out = {}
    for split in cache.splits:
        data = cache.load(split)
        out.update({p: (int(l), f) for p, l, f in zip(data.paths, data.labels, data.features)})
    return out


def no_stray_files(cache: Path) -> None:
    strays = [p for p in cache.rglob("*") if p.name.endswith(".lock") or ".tmp" in p.name
              or p.name.endswith(".partial")]
    assert not strays, strays


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A dataset extracted once: its folder, cache folder and rows (copied by each test)."""
    root = tmp_path_factory.mktemp("store")
    data = make_dataset(root / "data", per_class=6)
    first = extract_features(data, config(root / "cache"))
    assert first.computed == 24 and first.reused == 0
    return root, rows(first)


@pytest.fixture
def copy(base, tmp_path):
    root, before = base
    data = shutil.copytree(root / "data", tmp_path / "data")
    cache = shutil.copytree(root / "cache", tmp_path / "cache")
    return data, cache, before


def test_adding_one_image_computes_one(copy):
    data, cache, before = copy
    write_image(data / "train" / "cats" / "new.jpg", (200, 60, 40), seed=7)
    result = extract_features(data, config(cache))
    assert (result.computed, result.reused, result.hit) == (1, 24, False)
    after = rows(result)
    assert set(after) == set(before) | {"train/cats/new.jpg"}
    for path, (label, features) in before.items():
        assert after[path][0] == label
        np.testing.assert_array_equal(after[path][1], features)
    no_stray_files(cache)


def test_moving_an_image_to_another_class_computes_nothing_and_relabels(copy):
    data, cache, before = copy
    shutil.move(data / "train" / "cats" / "cats0.jpg", data / "train" / "dogs" / "cats0.jpg")
    result = extract_features(data, config(cache))
    assert (result.computed, result.reused) == (0, 24)
    after = rows(result)
    assert "train/cats/cats0.jpg" not in after
    label, features = after["train/dogs/cats0.jpg"]
    assert result.classes[label] == "dogs" and before["train/cats/cats0.jpg"][0] != label
    np.testing.assert_array_equal(features, before["train/cats/cats0.jpg"][1])


def test_removing_an_image_computes_nothing(copy):
    data, cache, before = copy
    (data / "validation" / "dogs" / "dogs3.jpg").unlink()
    result = extract_features(data, config(cache))
    assert (result.computed, result.reused) == (0, 23)
    assert set(rows(result)) == set(before) - {"validation/dogs/dogs3.jpg"}


def test_carving_a_test_split_computes_nothing(copy):
    data, cache, before = copy
    result = extract_features(data, config(cache, split=SplitConfig(test_from_validation=0.5)))
    assert result.computed == 0 and "test" in result.splits
    assert sum(result.splits.values()) == 24 and set(rows(result)) == set(before)


def test_a_second_folder_of_the_same_photos_in_another_layout_computes_nothing(copy, tmp_path):
    data, cache, before = copy
    other = tmp_path / "other"
    for path in data.rglob("*.jpg"):  # class folders, no split folders, other names
        target = other / path.parent.name / f"copy of {path.parent.parent.name} {path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    result = extract_features(other, config(cache))
    assert (result.computed, result.reused) == (0, 24)
    assert sum(result.splits.values()) == 24


def test_a_file_rewritten_in_place_is_computed_again(copy):
    data, cache, before = copy
    target = data / "train" / "dogs" / "dogs2.jpg"
    write_image(target, (10, 10, 10), seed=99)
    result = extract_features(data, config(cache))
    assert (result.computed, result.reused) == (1, 23)
    assert not np.array_equal(rows(result)["train/dogs/dogs2.jpg"][1], before["train/dogs/dogs2.jpg"][1])


def test_another_image_size_computes_every_image(copy):
    data, cache, _ = copy
    result = extract_features(data, config(cache, image_size=40))
    assert (result.computed, result.reused) == (24, 0)
    assert len(list((cache / "store").iterdir())) == 2  # one store per feature spec


def test_a_duplicate_file_in_one_dataset_is_computed_once(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    shutil.copy(data / "train" / "cats" / "cats1.jpg", data / "validation" / "cats" / "again.jpg")
    result = extract_features(data, config(tmp_path / "cache"))
    assert result.computed == 12 and sum(result.splits.values()) == 13
    got = rows(result)
    np.testing.assert_array_equal(got["validation/cats/again.jpg"][1], got["train/cats/cats1.jpg"][1])


def test_an_unchanged_rerun_reads_no_image(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.0)  # the files were written a moment ago
    data = make_dataset(tmp_path / "data", per_class=3)
    cfg = config(tmp_path / "cache")
    first = extract_features(data, cfg)
    assert first.fingerprinted == 12 and (tmp_path / "cache" / hashing.STAT_CACHE).is_file()

    def no_reading(path, max_bytes):
        raise AssertionError(f"{path} was read")

    with monkeypatch.context() as m:
        m.setattr(hashing, "fingerprint_file", no_reading)
        again = extract_features(data, cfg)
    assert again.hit and again.fingerprinted == 0
    # Same size, new bytes: the ctime changed, so it is read and computed again.
    target = data / "train" / "cats" / "cats0.jpg"
    size = target.stat().st_size
    target.write_bytes(target.read_bytes()[:-2] + b"\x00\x00")
    assert target.stat().st_size == size
    changed = extract_features(data, cfg)
    assert changed.fingerprinted == 1 and changed.computed == 1 and not changed.hit


def test_a_racy_fingerprint_is_not_remembered(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    prints = hashing.fingerprint_files(data, ["train/cats/cats0.jpg"], 2**20, tmp_path / "stat.sqlite")
    again = hashing.fingerprint_files(data, ["train/cats/cats0.jpg"], 2**20, tmp_path / "stat.sqlite")
    assert prints.read == again.read == 1  # written just now: its stat cannot be trusted yet
    assert again.digests == prints.digests


def test_an_unreadable_image_is_quarantined_by_content_and_not_decoded_again(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "train" / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    first = extract_features(data, config(tmp_path / "cache"))
    reason = {q["path"]: q["reason"] for q in first.quarantined}["train/cats/broken.jpg"]
    shutil.move(data / "train" / "cats" / "broken.jpg", data / "train" / "dogs" / "renamed.jpg")

    def no_decoding(*args):
        raise AssertionError("a known unreadable image was decoded again")

    monkeypatch.setattr("pipeline.data.decode.why_unreadable", no_decoding)
    second = extract_features(data, config(tmp_path / "cache"))
    assert second.computed == 0
    assert second.quarantined == [{"split": "train", "path": "train/dogs/renamed.jpg", "reason": reason}]


def test_a_dangling_link_is_quarantined_not_fatal(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "train" / "cats" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = extract_features(data, config(tmp_path / "cache"))
    assert result.quarantined == [{"split": "train", "path": "train/cats/gone.jpg",
                                   "reason": "cannot be read: No such file or directory"}]
    assert result.splits == {"train": 6, "validation": 6}


KILLED = """
import sys, time
sys.path.insert(0, {root!r})
from pipeline.features.store import FeatureStore
write = FeatureStore.write_segment
def slow(self, *args, **kwargs):  # time for the test to kill it between two chunks
    path = write(self, *args, **kwargs)
    time.sleep(0.4)
    return path
FeatureStore.write_segment = slow
from pipeline.cli import main
sys.exit(main(["extract", "--data", {data!r}, "--cache-dir", {cache!r}, "--weights", "none",
               "--image-size", "32", "--batch-size", "4", "--chunk-size", "4", "--no-progress"]))
"""


def test_sigkill_mid_run_then_rerun_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    reference = extract_features(data, config(tmp_path / "reference"))
    cache = tmp_path / "killed"
    code = KILLED.format(root=str(ROOT), data=str(data), cache=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.time() + 120
    while len(list(cache.glob("store/*/seg-*.h5"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(cache.glob("store/*/seg-*.h5")))
    assert 3 <= done < 10 and not list(cache.glob("*.h5")), "killed mid-run, nothing looks complete"
    resumed = extract_features(data, config(cache))
    assert resumed.resumed_images == 4 * done and resumed.computed == 40 - 4 * done
    assert resumed.path.name == reference.path.name
    with h5py.File(resumed.path) as a, h5py.File(reference.path) as b:
        for split in ("train", "validation"):
            for name in ("features", "labels", "paths", "fingerprints"):
                np.testing.assert_array_equal(a[split][name][()], b[split][name][()])
    no_stray_files(cache)


def test_gc_keeps_every_row_a_view_needs_and_drops_the_rest(tmp_path):
    cache = tmp_path / "cache"
    old = make_dataset(tmp_path / "old", per_class=3)
    new = make_dataset(tmp_path / "new", per_class=3)
    for i, path in enumerate(sorted(new.rglob("*0.jpg"))):  # new shares all but these 4 with old
        write_image(path, (90, 90, 90), seed=100 + i)
    first = extract_features(old, config(cache))
    second = extract_features(new, config(cache))
    assert second.computed == 4 and second.reused == 8
    past = time.time() - 10 * 86400
    os.utime(first.path, (past, past))
    store = next((cache / "store").iterdir())
    assert FeatureStore(store).usage()["rows"] == 16

    dry = collect_garbage(cache, older_than_days=5, dry_run=True)
    assert dry["views_dropped"] == [str(first.path)] and dry["rows_dropped"] == 4
    assert first.path.exists() and FeatureStore(store).usage()["rows"] == 16

    report = collect_garbage(cache, older_than_days=5)
    assert report["views_dropped"] == [str(first.path)] and report["rows_dropped"] == 4
    assert not first.path.exists() and FeatureStore(store).usage()["rows"] == 12
    before = rows(second)
    again = extract_features(new, config(cache))
    assert again.hit and set(rows(again)) == set(before)
    assert extract_features(old, config(cache)).computed == 4  # only the dropped rows
    assert collect_garbage(cache)["rows_dropped"] == 0  # every row is in a live view
    no_stray_files(cache)


def test_gc_removes_a_store_no_view_uses(tmp_path):
    cache = tmp_path / "cache"
    result = extract_features(make_dataset(tmp_path / "data", per_class=2), config(cache))
    result.path.unlink()
    report = collect_garbage(cache)
    assert report["rows_dropped"] == 8 and report["stores"][0]["removed"]
    assert not list((cache / "store").iterdir())


def test_cache_ls_and_gc_on_the_command_line(tmp_path, capsys):
    cache = tmp_path / "cache"
    result = extract_features(make_dataset(tmp_path / "data", per_class=2), config(cache))
    assert main(["cache", "ls", "--cache-dir", str(cache), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (store,) = listing["stores"]
    assert store["rows"] == 8 and store["spec"]["image_size"] == 32 and store["bytes"] > 8 * 256 * 4
    assert [v["path"] for v in store["views"]] == [str(result.path)]
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "8 rows" in out and result.path.name in out
    assert main(["cache", "gc", "--cache-dir", str(cache), "--older-than", "1", "--dry-run"]) == 0
    assert "would drop 0 views and 0 store rows" in capsys.readouterr().out
    assert main(["cache", "gc", "--cache-dir", str(tmp_path / "nowhere")]) == 2
    assert "`--cache-dir` " in capsys.readouterr().err


def test_extract_says_what_it_computed_and_reused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=2)
    args = ["extract", "--data", str(data), "--weights", "none", "--image-size", "32",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    assert "computed 8 images, reused 0 rows from the feature store" in capsys.readouterr().out
    write_image(data / "train" / "dogs" / "extra.jpg", seed=3)
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["computed"], result["reused"], result["hit"]) == (1, 8, False)


def test_a_cache_file_without_checksums_is_refused_and_listed_as_unreadable(tmp_path, feature_cache):
    from pipeline.features import checked

    with h5py.File(feature_cache, "a") as h5:  # as an older version wrote it
        del h5.attrs[checked.DIGEST]
    with pytest.raises(CacheError, match="was written by an older version, without checksums, so "
                                         "its bytes cannot be checked. Fix: run the same"):
        FeatureCache(feature_cache)
    listing = list_cache(feature_cache.parent)
    assert [v["path"] for v in listing["unreadable"]] == [str(feature_cache)]


def test_files_that_are_not_images_are_named_in_the_json_and_the_log(tmp_path, capsys, caplog):
    data = make_dataset(tmp_path / "data", per_class=2)
    for name in ("notes.txt", "scan.heic", "clip.mp4"):
        (data / "train" / "cats" / name).write_bytes(b"x")
    args = ["extract", "--data", str(data), "--weights", "none", "--image-size", "32",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ignored"] == ["train/cats/clip.mp4", "train/cats/notes.txt", "train/cats/scan.heic"]
    assert result["ignored_files"] == 3
    assert "ignored 3 files that are not images" in caplog.text and "train/cats/scan.heic" in caplog.text


def test_a_segment_that_keeps_failing_is_set_aside_each_round_and_then_refused(tmp_path):
    """The one loop extraction, suggest and drift recover through: a round per segment, then a fix."""
    from pipeline.features.checked import DamagedFile

    store = FeatureStore.create(tmp_path / "store", {"spec": 1})
    for i in range(2):
        store.write_segment([f"{i:032x}"], np.ones((1, 4), np.float32), {}, view="v")
    rounds = []

    def attempt():  # every round finds the next segment damaged
        rounds.append(1)
        segments = store.segments()
        if segments:
            raise DamagedFile(segments[0], "/features fails its checksum")
        raise DamagedFile(tmp_path / "store" / "phantom.h5", "/features fails its checksum")

    with pytest.raises(CacheError, match=r"store keeps failing its checksums\. Fix: `python run_pipeline.py "
                                         r"cache verify --repair`, then extract again\.$"):
        store.until_whole(attempt, "extract again")
    assert len(rounds) == 3 and store.segments() == []
    assert len(list((tmp_path / "store" / "damaged").iterdir())) == 2

    assert store.until_whole(lambda: "whole", "extract again") == "whole"
