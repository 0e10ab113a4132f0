"""Faults a careful user or an attacker would try: the pipeline touches only what it made,
and never serves a stored byte it has not checked.

Each test asserts the exit status and the sentence, that a user's files are
byte-identical afterwards, and that the rows equal a clean run's (or that the
file was refused). Bytes are flipped at a dataset's real file offset, never
through h5py, which would write a fresh checksum.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_dataset, write_image
from pipeline import CompareConfig, ExtractConfig, compare, extract_features
from pipeline.cli import main
from pipeline.config import ExportConfig, SplitConfig
from pipeline.errors import ConfigError, RunError
from pipeline.features import hashing
from pipeline.features.extract import carry_out, plan
from pipeline.features.manage import collect_garbage, verify_cache
from pipeline.features.store import FeatureStore
from pipeline.features.view import FeatureCache


def config(tmp_path, **kwargs) -> ExtractConfig:
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 8,
                            "cache_dir": str(tmp_path / "cache"), **kwargs})


def users_folder(folder: Path) -> dict[str, bytes]:
    """A folder of a user's own files; what it holds, to compare afterwards."""
    (folder / "chapter").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\section{Results}")
    (folder / "chapter" / "data.csv").write_text("a,b\n1,2\n")
    (folder / "logreg.keras").write_bytes(b"the user's own model")
    (folder / "logreg_savedmodel").mkdir()
    (folder / "logreg_savedmodel" / "saved_model.pb").write_bytes(b"the user's own graph")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def flip(path: Path, offset: int, count: int = 16) -> None:
    """Invert ``count`` bytes of a file at ``offset``, as a bad disk or a stray write would."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(count)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def row_offset(path: Path, dataset: str) -> int:
    """Where the first chunk of ``dataset`` starts in the file (h5py tells; nothing is rewritten)."""
    with h5py.File(path, "r") as h5:
        return h5[dataset].id.get_chunk_info(0).byte_offset + 8


def rows(result) -> dict[str, np.ndarray]:
    cache = FeatureCache(result.path)
    return {s: cache.load(s).features for s in cache.splits}


# The pipeline owns its folders, and only those.

def test_run_into_a_users_folder_is_refused_before_any_work(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    thesis = tmp_path / "thesis"
    before = users_folder(thesis)
    code = main(["run", "--data", str(data), "--out", str(thesis), "--weights", "none",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 2
    assert f"`--out` {thesis} is a folder of other files, not a run this tool wrote" in capsys.readouterr().err
    assert snapshot(thesis) == before
    assert not (tmp_path / "cache").exists()  # refused before stage 1


def test_compare_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path, feature_cache, capsys):
    mine = tmp_path / "mine"
    before = users_folder(mine)
    code = main(["compare", "--features", str(feature_cache), "--out", str(mine), "--overwrite",
                 "--classifiers", "logreg"])
    assert code == 2
    err = capsys.readouterr().err
    assert "is a folder of other files, not a run this tool wrote" in err
    assert "Fix: pass a new or empty folder with `--out`." in err
    assert snapshot(mine) == before


def test_a_run_holding_a_users_file_is_not_replaced(tmp_path, feature_cache):
    out = tmp_path / "run"
    compare(feature_cache, CompareConfig(classifiers=("logreg",), out=str(out)))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"also holds files this tool did not write \(notes.txt\)"):
        compare(feature_cache, CompareConfig(classifiers=("logreg",), out=str(out), overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"


def test_a_run_is_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path, feature_cache, monkeypatch):
    out = tmp_path / "run"
    compare(feature_cache, CompareConfig(classifiers=("logreg",), out=str(out)))
    before = snapshot(out)
    from pipeline.runs import folder

    real = folder.RunWriter.write_json

    def full_disk(self, relative, data):
        if relative == folder.MANIFEST:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, relative, data)

    monkeypatch.setattr(folder.RunWriter, "write_json", full_disk)
    with pytest.raises(RunError, match=r"Writing the run folder .* failed: the disk is full .* an "
                                       r"earlier run there is whole\. Fix: free space"):
        compare(feature_cache, CompareConfig(classifiers=("knn",), out=str(out), overwrite=True))
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_run_folder_that_cannot_be_made_gets_a_sentence(tmp_path, feature_cache, monkeypatch):
    from pipeline.runs import folder

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(folder.tempfile, "mkdtemp", read_only)
    with pytest.raises(RunError, match=r"Writing the run folder .* failed: it could not be written "
                                       r"\(\[Errno 30\] Read-only file system\)"):
        compare(feature_cache, CompareConfig(classifiers=("knn",), out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_export_never_overwrites_a_users_files(tmp_path, stage2_run):
    from pipeline.deploy.export import export, keras_files

    out = tmp_path / "mine"
    before = users_folder(out)
    with pytest.raises(ConfigError, match=r"already holds files this tool did not write .* an export "
                                          r"never overwrites or deletes them\. Fix: pass a new or "
                                          r"empty folder with `out`\."):
        export(stage2_run, ExportConfig(model="logreg", out=str(out)))
    with pytest.raises(ConfigError, match="an export never overwrites or deletes them"):
        keras_files(stage2_run, "logreg", out)
    assert snapshot(out) == before


def test_export_goes_over_its_own_earlier_export_and_nothing_else(tmp_path, stage2_run):
    from pipeline.deploy.export import keras_files

    out = tmp_path / "export"
    keras_files(stage2_run, "logreg", out)
    (out / "README.txt").write_text("the user's note")
    first = (out / "logreg.keras").stat().st_mtime_ns
    keras_files(stage2_run, "logreg", out)
    assert (out / "logreg.keras").stat().st_mtime_ns != first
    assert (out / "README.txt").read_text() == "the user's note"
    listing = json.loads((out / "export.json").read_text())
    assert listing["logreg (predict --export)"]["files"] == ["logreg.keras", "logreg_savedmodel"]


def test_an_export_on_a_full_disk_writes_nothing(tmp_path, stage2_run, monkeypatch):
    from pipeline.deploy.export import keras_files

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("keras.Model.save", full_disk)
    with pytest.raises(RunError, match=r"Writing the export into .* failed: the disk is full .* "
                                       r"Nothing was written there\."):
        keras_files(stage2_run, "logreg", tmp_path / "export")
    assert not (tmp_path / "export").exists()


# Every stored array is checked when read.

def test_a_flipped_row_in_a_store_segment_is_never_served(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    clean = rows(extract_features(data, config(tmp_path), progress=False))
    store = next((tmp_path / "cache" / "store").iterdir())
    segment = sorted(store.glob("seg-*.h5"))[0]
    flip(segment, row_offset(segment, "features"))
    renamed = tmp_path / "renamed"  # the same photos under new names: a new view over old rows
    shutil.copytree(data, renamed)
    for photo in sorted(renamed.rglob("*.jpg")):
        photo.rename(photo.with_name("new-" + photo.name))
    again = extract_features(renamed, config(tmp_path), progress=False)
    assert f"{segment} is damaged: /features fails its checksum" in caplog.text
    assert "Its images are computed again." in caplog.text
    assert again.computed > 0
    assert again.computed + again.reused == 24  # rows of the segment set aside count as computed only
    got = rows(again)
    for split in clean:  # the same photos, sorted the same way
        np.testing.assert_array_equal(got[split], clean[split])
    assert (store / "damaged" / segment.name).is_file()


def test_a_flipped_byte_in_a_views_features_is_refused_then_rebuilt(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    first = extract_features(data, config(tmp_path), progress=False)
    clean = rows(first)
    flip(first.path, row_offset(first.path, "train/features"))
    code = main(["compare", "--features", str(first.path), "--out", str(tmp_path / "run"),
                 "--classifiers", "logreg"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{first.path} is damaged: /train/features fails its checksum" in err
    assert "Fix: run the same `python run_pipeline.py extract` command again; it rebuilds" in err
    again = extract_features(data, config(tmp_path), progress=False)
    assert not again.hit and again.computed == 0
    for split, features in rows(again).items():
        np.testing.assert_array_equal(features, clean[split])


@pytest.mark.parametrize("where", [b'"backbone"', b"OHDR"])
def test_a_flipped_byte_in_a_views_metadata_is_refused_then_rebuilt(tmp_path, capsys, where):
    data = make_dataset(tmp_path / "data")
    first = extract_features(data, config(tmp_path), progress=False)
    clean = rows(first)
    flip(first.path, first.path.read_bytes().index(where) + 4, 2)
    for command in (["inspect", str(first.path)],
                    ["compare", "--features", str(first.path), "--out", str(tmp_path / "run")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"{first.path} is damaged: " in err
        assert "it rebuilds this file from the feature store" in err
    again = extract_features(data, config(tmp_path), progress=False)
    assert not again.hit and again.computed == 0
    for split, features in rows(again).items():
        np.testing.assert_array_equal(features, clean[split])


def test_cache_verify_finds_flipped_bytes_and_repair_sets_them_aside(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    first = extract_features(data, config(tmp_path), progress=False)
    clean = rows(first)
    cache = tmp_path / "cache"
    assert verify_cache(cache)["damaged"] == []
    segment = sorted((cache / "store").glob("*/seg-*.h5"))[0]
    flip(segment, row_offset(segment, "features"))
    flip(first.path, row_offset(first.path, "validation/features"))
    assert main(["cache", "verify", "--cache-dir", str(cache), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {(d["kind"], d["path"]) for d in report["damaged"]} == {("segment", str(segment)),
                                                                   ("view", str(first.path))}
    assert main(["cache", "verify", "--cache-dir", str(cache), "--repair"]) == 0
    assert "checked" in capsys.readouterr().out
    assert verify_cache(cache)["damaged"] == []
    assert (cache / "damaged" / first.path.name).is_file()
    again = extract_features(data, config(tmp_path), progress=False)
    for split, features in rows(again).items():
        np.testing.assert_array_equal(features, clean[split])


def test_cache_ls_and_gc_survive_a_truncated_segment(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    extract_features(data, config(tmp_path), progress=False)
    cache = tmp_path / "cache"
    segment = sorted((cache / "store").glob("*/seg-*.h5"))[0]
    with h5py.File(segment, "r") as h5:
        lost = len(h5["fingerprints"])
    segment.write_bytes(segment.read_bytes()[:1000])
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    report = collect_garbage(cache)
    assert report["stores"] and not segment.exists()  # set aside and removed
    capsys.readouterr()
    other_view = config(tmp_path, split=SplitConfig(test_from_validation=0.5))  # the same photos
    again = extract_features(data, other_view, progress=False)
    assert again.computed == lost and verify_cache(cache)["damaged"] == []


# The bytes hashed are the bytes decoded.

def test_an_image_replaced_while_extracting_is_never_stored_under_the_old_digest(tmp_path):
    data = make_dataset(tmp_path / "data")
    photo = data / "train" / "cats" / "cats0.jpg"
    planned = plan(data, config(tmp_path))
    old_digest = dict(zip(planned.manifests["train"].paths,
                          planned.manifests["train"].fingerprints))["train/cats/cats0.jpg"]
    shutil.copy(data / "train" / "dogs" / "dogs3.jpg", photo)  # between planning and decoding
    result = carry_out(planned, progress=False)
    assert {"split": "train", "path": "train/cats/cats0.jpg",
            "reason": "changed while it was being read (its bytes differ from those fingerprinted); "
                      "run again"} in result.quarantined
    store = FeatureStore(next((tmp_path / "cache" / "store").iterdir())).index()
    assert store.locate(np.asarray([old_digest], "S32"))[0] == -1 and old_digest not in store.bad
    again = extract_features(data, config(tmp_path), progress=False)  # now stored by what it holds
    assert again.quarantined == []
    clean = extract_features(data, config(tmp_path / "clean"), progress=False)
    for split, features in rows(again).items():  # computed in other batches: float rounding apart
        np.testing.assert_allclose(features, rows(clean)[split], rtol=1e-3, atol=1e-20)


def test_an_image_truncated_while_extracting_then_restored_is_computed(tmp_path):
    data = make_dataset(tmp_path / "data")
    photo = data / "train" / "cats" / "cats1.jpg"
    whole = photo.read_bytes()
    planned = plan(data, config(tmp_path))
    photo.write_bytes(whole[:200])
    first = carry_out(planned, progress=False)
    assert [q["path"] for q in first.quarantined] == ["train/cats/cats1.jpg"]
    photo.write_bytes(whole)
    again = extract_features(data, config(tmp_path), progress=False)
    assert again.quarantined == [] and again.splits["train"] == 12


# Bounded reads, and one sentence for every other bad input.

def test_a_huge_file_and_a_device_link_are_refused_by_stat(tmp_path, capsys, stage2_run):
    data = make_dataset(tmp_path / "data")
    huge = data / "train" / "cats" / "z.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(20 * 2**30)  # sparse: no disk is used
    (data / "train" / "cats" / "y.jpg").symlink_to("/dev/zero")
    result = extract_features(data, config(tmp_path), progress=False)
    reasons = {q["path"]: q["reason"] for q in result.quarantined}
    assert reasons["train/cats/z.jpg"].startswith(f"is {20 * 2**30:,} bytes, more than `max_file_bytes`")
    assert reasons["train/cats/y.jpg"].startswith("is not a regular file")
    assert main(["predict", "--run", str(stage2_run), str(data / "train" / "cats"), "--json"]) == 0
    unreadable = {Path(r["path"]).name: r["reason"]
                  for r in json.loads(capsys.readouterr().out)["unreadable"]}
    assert unreadable == {"z.jpg": reasons["train/cats/z.jpg"], "y.jpg": reasons["train/cats/y.jpg"]}


def test_class_names_are_drawn_as_plain_text(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=8)
    for split in ("train", "validation"):
        (data / split / "cats").rename(data / split / "$x^$")
    cache = extract_features(data, config(tmp_path), progress=False)
    result = compare(cache.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run")))
    assert "$x^$" in json.loads((result.run_dir / "manifest.json").read_text())["classes"]
    assert (result.run_dir / "plots" / "confusion_logreg.png").stat().st_size > 0


@pytest.mark.parametrize("args, sentence", [
    (["--param", "logreg.C=-1"], "`--param logreg.C=-1` is refused: The 'C' parameter of "
                                 "LogisticRegression must be a float in the range (0.0, inf]"),
    (["--classifiers", "knn", "--param", "knn.n_neighbors=0"],
     "`--param knn.n_neighbors=0` is refused: The 'n_neighbors' parameter of KNeighborsClassifier "
     "must be an int in the range [1, inf)"),
])
def test_bad_classifier_parameters_are_refused_before_any_fit(tmp_path, feature_cache, capsys, args,
                                                              sentence):
    assert main(["compare", "--features", str(feature_cache), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_view_whose_images_were_all_quarantined_gets_a_sentence(tmp_path):
    data = make_dataset(tmp_path / "data")
    for photo in (data / "validation").rglob("*.jpg"):
        photo.write_bytes(b"not a picture")
    cache = extract_features(data, config(tmp_path), progress=False)
    with pytest.raises(ConfigError, match=r"has no validation rows: all 12 of its validation images "
                                          r"were quarantined \(`inspect` lists them"):
        compare(cache.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run")))


@pytest.mark.parametrize("command, sentence", [
    (["extract", "--image-size", "100000"], "`--image-size` must be at most 4096"),
    (["extract", "--max-file-bytes", "0"], "`--max-file-bytes` must be a positive integer. Got 0."),
    (["predict", "--batch-size", "0"], "`--batch-size` must be a positive integer. Got 0."),
    (["export", "--images", "0"], "`--images` must be a positive integer. Got 0."),
])
def test_bad_numbers_get_one_sentence(tmp_path, stage2_run, capsys, command, sentence):
    data = make_dataset(tmp_path / "data", per_class=2)
    where = {"extract": ["--data", str(data), "--cache-dir", str(tmp_path / "cache")],
             "predict": ["--run", str(stage2_run), str(data)],
             "export": ["--run", str(stage2_run), "--out", str(tmp_path / "out")]}[command[0]]
    assert main([command[0], *where, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err


def test_a_corrupt_stat_cache_is_set_aside_once(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    time.sleep(hashing.RACY_SECONDS + 0.1)  # so the stat cache may trust these files' stats
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hashing.STAT_CACHE).write_bytes(b"not a database" * 100)
    extract_features(data, config(tmp_path), progress=False)
    assert caplog.text.count("could not read the fingerprint cache") == 1
    assert (cache / f"{hashing.STAT_CACHE}.damaged").is_file()
    caplog.clear()
    again = extract_features(data, config(tmp_path), progress=False)
    assert "could not read the fingerprint cache" not in caplog.text
    assert again.hit and again.fingerprinted == 0


def test_an_unreadable_subfolder_is_named_among_the_skipped(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data")
    private = data / "train" / "cats" / "private"
    write_image(private / "secret.jpg")
    real = os.scandir

    def refuse(path="."):
        if Path(path) == private:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refuse)
    result = extract_features(data, config(tmp_path), progress=False)
    assert "train/cats/private/ (a folder that cannot be read: Permission denied)" in result.ignored


def test_a_run_that_stops_at_extract_names_only_what_exists(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    code = main(["run", "--data", str(data), "--weights", "none", "--cache-dir", str(tmp_path / "cache"),
                 "--stages", "extract", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "features: " in out and "(extract ran;" in out
    assert "leaderboard:" not in out and "report:" not in out and "reproduce:" not in out


def test_a_file_swapped_for_a_device_after_its_stat_is_refused_not_read(tmp_path, monkeypatch):
    from pipeline.data import files

    photo = write_image(tmp_path / "a.jpg")
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    real = files.refusal
    for read in (files.read_bytes, files.fingerprint_file):
        checks = []

        def swapped_after_the_stat(st, max_bytes):  # the first check saw a photo, then a swap
            checks.append(st)
            return None if len(checks) == 1 else real(st, max_bytes)

        monkeypatch.setattr(files, "refusal", swapped_after_the_stat)
        with pytest.raises(files.Refused, match="is not a regular file"):
            read(str(link), 2**20)
        assert len(checks) == 2  # refused by the second check, on the opened file
    monkeypatch.setattr(files, "refusal", real)
    assert files.fingerprint_file(str(photo), 2**20) == files.fingerprint_bytes(photo.read_bytes())
    monkeypatch.setattr(files, "refusal", lambda st, max_bytes: None)  # small at both stats ...
    for read in (files.read_bytes, files.fingerprint_file):  # ... then it grew
        with pytest.raises(files.Refused, match="grew past `max_file_bytes` = 10 while it was being read"):
            read(str(photo), 10)


def test_a_file_is_read_whole_past_its_stat_and_through_short_reads(tmp_path, monkeypatch):
    """Its stat asks for the size it gave; bytes past that, and reads that stop short, are read on."""
    import io

    from pipeline.data import files

    whole = write_image(tmp_path / "a.jpg", size=(64, 64)).read_bytes()

    class Trickling(io.RawIOBase):  # a file system that gives at most 100 bytes a read
        def __init__(self):
            self.at = 0

        def readable(self):
            return True

        def read(self, n=-1):
            part = whole[self.at:self.at + min(n, 100)]
            self.at += len(part)
            return part

    for stat_size in (len(whole), 10, 0):  # true, then smaller than the file (it grew after its stat)
        monkeypatch.setattr(files, "_opened", lambda path, max_bytes: (Trickling(), stat_size))
        assert files.read_bytes("a.jpg", 2**20) == whole
        with pytest.raises(files.Refused, match="grew past"):
            files.read_bytes("a.jpg", len(whole) - 1)
    monkeypatch.undo()
    assert files.read_bytes("/proc/self/status", 2**20).startswith(b"Name:")  # a stat size of 0
