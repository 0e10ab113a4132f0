"""The second round of attacks: links planted in what the tool owns, a stat cache that lies,
files whose declared shapes lie, and bad values that must get one sentence.

Each test asserts the exit status or the sentence, that a user's file is
byte-identical afterwards, and that rows equal a clean run's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_dataset
from pipeline import ExtractConfig, extract_features
from pipeline.cli import main
from pipeline.config import SplitConfig
from pipeline.features import checked, hashing
from pipeline.features.view import FeatureCache

ROOT = Path(__file__).resolve().parents[1]


def config(folder: Path, **kwargs) -> ExtractConfig:
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 8,
                            "cache_dir": str(folder / "cache"), **kwargs})


def by_path(result) -> dict[str, np.ndarray]:
    """Every row of a view, by the image's path."""
    cache = FeatureCache(result.path)
    rows = {}
    for split in cache.splits:
        data = cache.load(split)
        rows.update(zip(data.paths, data.features))
    return rows


def settled_dataset(folder: Path) -> Path:
    """A dataset whose files are old enough for the stat cache to remember them."""
    data = make_dataset(folder)
    time.sleep(hashing.RACY_SECONDS + 0.1)
    return data


# The stat cache is a hint.

def stat_entries(cache: Path) -> dict[str, list]:
    with sqlite3.connect(cache / hashing.STAT_CACHE) as conn:
        return {row[0]: list(row) for row in conn.execute("SELECT * FROM files")}


def write_entries(cache: Path, rows: list[list]) -> None:
    with sqlite3.connect(cache / hashing.STAT_CACHE) as conn:
        conn.executemany(f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * len(rows[0]))})", rows)


def test_swapped_digests_in_the_stat_cache_never_give_a_photo_anothers_features(tmp_path, caplog):
    data = settled_dataset(tmp_path / "data")
    clean = by_path(extract_features(data, config(tmp_path), progress=False))
    entries = stat_entries(tmp_path / "cache")
    cat, dog = (str(data / "train" / name) for name in ("cats/cats1.jpg", "dogs/dogs1.jpg"))
    entries[cat][5], entries[dog][5] = entries[dog][5], entries[cat][5]
    write_entries(tmp_path / "cache", [entries[cat], entries[dog]])
    again = extract_features(data, config(tmp_path), progress=False)
    assert "2 entries of the fingerprint cache" in caplog.text and "fail their checksum" in caplog.text
    assert again.fingerprinted == 2 and again.quarantined == []
    got = by_path(again)
    for path, row in clean.items():
        np.testing.assert_array_equal(got[path], row)


def test_a_stale_digest_that_passes_its_checksum_is_replaced_and_the_photo_kept(tmp_path, caplog):
    data = settled_dataset(tmp_path / "data")
    clean = by_path(extract_features(data, config(tmp_path), progress=False))
    entries = stat_entries(tmp_path / "cache")
    cat = str(data / "train" / "cats" / "cats0.jpg")
    true_digest = entries[cat][5]
    entry = entries[cat][:5] + [("0" if true_digest[0] != "0" else "1") + true_digest[1:]]
    write_entries(tmp_path / "cache", [entry + [hashing._seal(*entry)]])  # a well-formed lie
    again = extract_features(data, config(tmp_path), progress=False)
    assert "1 images' remembered fingerprints did not match their bytes" in caplog.text
    assert again.quarantined == []
    assert stat_entries(tmp_path / "cache")[cat][5] == true_digest
    got = by_path(again)
    for path, row in clean.items():
        np.testing.assert_array_equal(got[path], row)
    caplog.clear()
    third = extract_features(data, config(tmp_path), progress=False)
    assert third.hit and third.fingerprinted == 0 and "did not match" not in caplog.text


def test_an_edited_digest_is_hashed_again_not_quarantined_forever(tmp_path):
    data = settled_dataset(tmp_path / "data")
    extract_features(data, config(tmp_path), progress=False)
    entries = stat_entries(tmp_path / "cache")
    cat = str(data / "train" / "cats" / "cats0.jpg")
    entries[cat][5] = "f" + entries[cat][5][1:] if entries[cat][5][0] != "f" else "e" + entries[cat][5][1:]
    write_entries(tmp_path / "cache", [entries[cat]])
    again = extract_features(data, config(tmp_path), progress=False)
    assert again.quarantined == [] and again.splits["train"] == 12


@pytest.mark.parametrize("target", ["database", "empty"])
def test_a_stat_cache_linked_to_a_users_file_is_neither_read_nor_changed(tmp_path, caplog, target):
    data = make_dataset(tmp_path / "data")
    users = tmp_path / "app.db"
    if target == "database":
        with sqlite3.connect(users) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
    else:
        users.write_bytes(b"")
    before = users.read_bytes()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / hashing.STAT_CACHE).symlink_to(users)
    result = extract_features(data, config(tmp_path), progress=False)
    assert result.splits == {"train": 12, "validation": 12}
    assert users.read_bytes() == before
    assert f"{tmp_path / 'cache' / hashing.STAT_CACHE} is a link or not a regular file" in caplog.text
    assert "Fix: remove it" in caplog.text


def test_another_programs_database_in_the_stat_caches_place_is_left_alone(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    (tmp_path / "cache").mkdir()
    db = tmp_path / "cache" / hashing.STAT_CACHE
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = db.read_bytes()
    extract_features(data, config(tmp_path), progress=False)
    assert db.read_bytes() == before and "holds tables of another program (notes)" in caplog.text


# Declared sizes never take memory.

def forge(view: Path, split: str, name: str, shape: tuple, dtype) -> None:
    """Replace ``split/name`` by an array that declares ``shape`` and stores nothing."""
    with h5py.File(view, "r+") as h5:
        del h5[split][name]
        h5[split].create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]) if len(shape) > 1
                                 else (1024,))


CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
sys.path.insert(0, {root!r})
from pipeline.cli import main
from pipeline.config import SplitConfig
sys.exit(main({args!r}))
"""


def capped(args: list[str], cap: int = 3 * 2**30 // 2) -> subprocess.CompletedProcess:
    """A command under a 1.5 GB address-space cap and 60 s."""
    code = CAPPED.format(cap=cap, root=str(ROOT), args=args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def a_view(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("view")
    return extract_features(make_dataset(folder / "data"), config(folder), progress=False).path


def forged_copy(a_view: Path, tmp_path: Path) -> Path:
    copy = tmp_path / a_view.name
    copy.write_bytes(a_view.read_bytes())
    return copy


@pytest.mark.parametrize("command", ["inspect", "compare"])
def test_a_view_declaring_a_billion_rows_is_refused_within_a_bounded_memory(a_view, tmp_path, command):
    view = forged_copy(a_view, tmp_path)
    for name, dtype in [("features", "float32"), ("labels", "int32"), ("paths", h5py.string_dtype()),
                        ("fingerprints", h5py.string_dtype())]:
        with h5py.File(view, "r") as h5:
            shape = (10**9, *h5["train"][name].shape[1:])
        forge(view, "train", name, shape, dtype)
    args = ["inspect", str(view)] if command == "inspect" else \
        ["compare", "--features", str(view), "--out", str(tmp_path / "run"), "--classifiers", "logreg"]
    run = capped(args)
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"{view} is damaged: /train/features declares shape (1000000000, 256)" in run.stderr \
        or f"{view} is damaged: /train/fingerprints declares shape (1000000000,)" in run.stderr
    assert "Fix: run the same `python run_pipeline.py extract` command again" in run.stderr
    assert "Traceback" not in run.stderr


def test_features_declaring_a_billion_columns_get_the_damaged_sentence(a_view, tmp_path, capsys):
    view = forged_copy(a_view, tmp_path)
    with h5py.File(view, "r") as h5:
        rows = h5["train/features"].shape[0]
    forge(view, "train", "features", (rows, 10**9), "float32")
    code = main(["compare", "--features", str(view), "--out", str(tmp_path / "run"),
                 "--classifiers", "logreg"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{view} is damaged: /train/features declares shape ({rows}, 1000000000)" in err


def test_strings_are_digested_in_bounded_blocks(a_view, tmp_path, monkeypatch):
    with h5py.File(a_view, "r") as h5:
        whole = checked._digest(h5)
    monkeypatch.setattr(checked, "TEXT_BLOCK", 5)
    with h5py.File(a_view, "r") as h5:
        assert checked._digest(h5) == whole  # the same digest, read five strings at a time
        assert h5["train/paths"].shape[0] > 5


# Links in the store, and cleaning that removes only what the store listed.

def linked_store(tmp_path: Path, data: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """An extraction whose store folder was moved to another disk, linked back, and shares
    that folder with a person's files (one named like a segment)."""
    extract_features(data, config(tmp_path), progress=False)
    store = next((tmp_path / "cache" / "store").iterdir())
    target = tmp_path / "bigdisk" / store.name
    target.parent.mkdir()
    store.rename(target)
    store.symlink_to(target, target_is_directory=True)
    users = {"seg-notes.h5": b"a person's notes", "notes.txt": b"mine", "damaged/keep.txt": b"also mine"}
    for name, data_ in users.items():
        (target / name).parent.mkdir(exist_ok=True)
        (target / name).write_bytes(data_)
    return store, target, users


def test_gc_in_a_linked_store_folder_touches_only_the_segments_it_listed(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    store, target, users = linked_store(tmp_path, data)
    again = extract_features(data, config(tmp_path, split=SplitConfig(test_from_validation=0.5)), progress=False)
    assert again.computed == 0  # the linked store serves its rows
    assert main(["cache", "gc", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert {n: (target / n).read_bytes() for n in users} == users
    assert main(["cache", "gc", "--cache-dir", str(tmp_path / "cache"), "--older-than", "0"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "damaged segment" not in err
    assert {n: (target / n).read_bytes() for n in users} == users
    assert not list(target.glob("seg-*[0-9a-f].h5")) and not (target / "spec.json").exists()
    assert store.is_symlink()  # the person's link and folder stay


def test_a_link_planted_as_a_segment_is_never_read_and_never_removed(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    extract_features(data, config(tmp_path), progress=False)
    store = next((tmp_path / "cache" / "store").iterdir())
    segment = sorted(store.glob("seg-*.h5"))[0]
    users = tmp_path / "thesis.h5"
    users.write_bytes(segment.read_bytes())
    segment.unlink()
    segment.symlink_to(users)
    again = extract_features(data, config(tmp_path, split=SplitConfig(test_from_validation=0.5)), progress=False)
    assert f"{segment} is a link or not a regular file where the store keeps a segment" in caplog.text
    assert again.computed > 0
    from pipeline.features.manage import collect_garbage
    collect_garbage(tmp_path / "cache", older_than_days=0)
    assert users.read_bytes() and segment.is_symlink()


def test_a_store_without_its_list_keeps_its_segments(tmp_path):
    data = make_dataset(tmp_path / "data")
    extract_features(data, config(tmp_path), progress=False)
    store = next((tmp_path / "cache" / "store").iterdir())
    (store / "segments.txt").unlink()  # as a store written before the list
    again = extract_features(data, config(tmp_path, split=SplitConfig(test_from_validation=0.5)), progress=False)
    assert again.computed == 0 and again.reused == 24
    assert len((store / "segments.txt").read_text().split()) == len(list(store.glob("seg-*.h5")))


def test_gc_removes_what_was_set_aside_and_stale_probes_and_nothing_else(tmp_path):
    data = make_dataset(tmp_path / "data")
    first = extract_features(data, config(tmp_path), progress=False)
    cache = tmp_path / "cache"
    with open(first.path, "r+b") as fh:  # a flipped byte in the view's features
        with h5py.File(first.path, "r") as h5:
            offset = h5["train/features"].id.get_chunk_info(0).byte_offset + 8
        fh.seek(offset)
        fh.write(b"\xff" * 8)
    assert main(["cache", "verify", "--cache-dir", str(cache), "--repair"]) == 0
    assert (cache / "damaged" / first.path.name).is_file()
    (cache / "damaged" / "mine.txt").write_text("a person's file")
    (cache / ".write-test-4242").write_bytes(b"")
    extract_features(data, config(tmp_path), progress=False)
    assert main(["cache", "gc", "--cache-dir", str(cache)]) == 0
    assert not (cache / "damaged" / first.path.name).exists()
    assert not (cache / ".write-test-4242").exists()
    assert (cache / "damaged" / "mine.txt").read_text() == "a person's file"


# One sentence for every bad value, before any work.

@pytest.mark.parametrize("command, sentence", [
    (["compare", "--seed", "-1"], "`--seed` must be an integer from 0 to 4294967295. Got -1."),
    (["compare", "--classifiers", "dense", "--param", "dense.units=-4"],
     "`--param dense.units=-4` is refused: The 'units' parameter of DenseHead must be an int in "
     "the range [0, inf)"),
    (["compare", "--classifiers", "dense", "--param", "dense.learning_rate=-1"],
     "`--param dense.learning_rate=-1` is refused: The 'learning_rate' parameter of DenseHead must "
     "be a float in the range (0.0, inf)"),
    (["finetune", "--learning-rate", "-1"], "`--learning-rate` must be a positive number. Got -1.0."),
    (["run", "--set", "finetune.learning_rate=-1"], "`--learning-rate` must be a positive number"),
    (["extract", "--weights", "none", "--seed", "-1"],
     "`--seed` must be an integer from 0 to 4294967295. Got -1."),
    (["drift", "--permutations", "100000000"], "`--permutations` must be at most 100,000"),
])
def test_bad_values_get_one_sentence_naming_the_flag(tmp_path, stage2_run, feature_cache, capsys,
                                                     command, sentence):
    data = make_dataset(tmp_path / "data", per_class=2)
    where = {"compare": ["--features", str(feature_cache), "--out", str(tmp_path / "out")],
             "finetune": ["--run", str(stage2_run)],
             "run": ["--data", str(data), "--weights", "none", "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "out")],
             "extract": ["--data", str(data), "--cache-dir", str(tmp_path / "cache")],
             "drift": ["--run", str(stage2_run), "--batch", str(data)]}[command[0]]
    assert main([command[0], *where, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("content", [b'{"broken', b"[]", bytes(range(256)) * 4, b'{"stage": "compare"}',
                                     b'{"stage": "compare", "models": {"x": {"file": "../../etc/passwd", '
                                     b'"format": "joblib", "sha256": "0"}}}'])
@pytest.mark.parametrize("command", ["predict", "suggest", "drift", "export", "finetune"])
def test_a_corrupt_manifest_gets_one_sentence(run, tmp_path, capsys, command, content):
    data = make_dataset(tmp_path / "data", per_class=2)
    (run / "manifest.json").write_bytes(content)
    args = {"predict": ["predict", "--run", str(run), str(data)],
            "suggest": ["suggest", "--run", str(run), "--pool", str(data)],
            "drift": ["drift", "--run", str(run), "--batch", str(data)],
            "export": ["export", "--run", str(run), "--out", str(tmp_path / "exported")],
            "finetune": ["finetune", "--run", str(run)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run / 'manifest.json'} is damaged or was not written by this tool (" in err
    assert "Fix: run `python run_pipeline.py compare` again" in err and "Traceback" not in err


def test_out_into_folders_that_do_not_exist_yet_is_made(tmp_path, stage2_run, capsys):
    data = make_dataset(tmp_path / "data", splits=("new", "more"), per_class=2)  # not the run's photos
    page, table = tmp_path / "new" / "sub" / "x.html", tmp_path / "new2" / "p.json"
    assert main(["suggest", "--run", str(stage2_run), "--pool", str(data), "--n", "2",
                 "--out", str(page)]) == 0
    assert main(["predict", "--run", str(stage2_run), str(data), "--out", str(table)]) == 0
    assert page.stat().st_size > 0 and len(json.loads(table.read_text())["predictions"]) == 8
    cache = tmp_path / "cache"
    for i in (1, 2):
        assert main(["extract", "--data", str(data), "--weights", "none", "--image-size", "32",
                     "--cache-dir", str(cache), "--shard", f"{i}/2", "--no-progress"]) == 0
    merged = tmp_path / "new3" / "m.h5"
    assert main(["merge", *map(str, sorted(cache.glob("*.shard-*.h5"))), "--out", str(merged)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert sum(FeatureCache(merged).counts.values()) == 8


def test_an_empty_shard_on_a_fresh_store_is_written_and_merges(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=2)
    cache = tmp_path / "cache"
    for i in range(1, 9):  # one chunk per split: shards 1 to 7 own nothing
        assert main(["extract", "--data", str(data), "--weights", "none", "--image-size", "32",
                     "--cache-dir", str(cache), "--shard", f"{i}/8", "--no-progress"]) == 0, \
            capsys.readouterr().err[-2000:]
    assert main(["merge", *map(str, sorted(cache.glob("*.shard-*.h5")))]) == 0
    merged = next(p for p in cache.glob("*.h5") if ".shard-" not in p.name)
    whole = FeatureCache(merged)
    assert whole.feature_shape == (256,) and whole.counts == {"train": 4, "validation": 4}
    assert whole.load("train").features.shape == (4, 256)


def test_suggest_on_a_pool_of_unreadable_files_says_none_could_be_read(tmp_path, stage2_run, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(4):
        (pool / f"broken{i}.jpg").write_bytes(b"not a picture")
    assert main(["suggest", "--run", str(stage2_run), "--pool", str(pool)]) == 2
    err = capsys.readouterr().err
    assert f"None of the 4 images under {pool} could be read" in err
    assert "broken0.jpg" in err and "already labelled" not in err and "Traceback" not in err


# Smaller ones.

def test_inspect_into_a_closed_pipe_stops_quietly(a_view):
    shell = f"{sys.executable} {ROOT / 'run_pipeline.py'} inspect '{a_view}' | head -1"
    run = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == str(a_view)
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr
    # The reader gone before a byte is written, as `| head` that has already exited:
    process = subprocess.Popen([sys.executable, str(ROOT / "run_pipeline.py"), "inspect", str(a_view)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.communicate(timeout=120)[1].decode()
    assert process.returncode == 141, err[-2000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_inspect_refuses_a_damaged_view(a_view, tmp_path, capsys):
    view = forged_copy(a_view, tmp_path)
    with h5py.File(view, "r") as h5:
        offset = h5["validation/features"].id.get_chunk_info(0).byte_offset + 8
    with open(view, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00\xff" * 8)
    assert main(["inspect", str(view)]) == 2
    captured = capsys.readouterr()
    assert f"{view} is damaged: /validation/features fails its checksum" in captured.err
    assert "backbone" not in captured.out


def test_a_run_folder_follows_the_umask(tmp_path, feature_cache):
    from pipeline import CompareConfig, compare

    old = os.umask(0o022)
    try:
        result = compare(feature_cache, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run")))
    finally:
        os.umask(old)
    assert result.run_dir.stat().st_mode & 0o777 == 0o755


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys):
    from pipeline.cli import commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "backbones", (commands.COMMANDS["backbones"][0], interrupted))
    assert main(["backbones"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted; run the same command again to resume"


INTERRUPTED = """
import os, sys, time
sys.path.insert(0, {root!r})
from pipeline.cli import main
from pipeline.features import extract


def computing(*args, **kwargs):  # stage 1 reached: say so, then wait for the signal
    os.write(2, b"computing\\n")
    time.sleep(120)


extract.compute_rows = computing
sys.exit(main({args!r}))
"""


def test_ctrl_c_in_a_real_extraction_exits_130_and_the_rerun_resumes(tmp_path):
    import signal

    data = make_dataset(tmp_path / "data", per_class=6)
    args = ["extract", "--data", str(data), "--weights", "none", "--image-size", "32", "--cache-dir",
            str(tmp_path / "cache"), "--no-progress"]
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED.format(root=str(ROOT), args=args)],
                               stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    said = b""
    while b"computing" not in said:  # inside stage 1's loop, whatever this machine's speed
        line = process.stderr.readline()
        assert line, said.decode(errors="replace")[-2000:]
        said += line
    process.send_signal(signal.SIGINT)
    err = said.decode() + process.communicate(timeout=120)[1].decode()
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted; run the same command again" in err
    assert main(args) == 0


def test_file_names_that_are_not_utf8_are_kept_as_their_bytes(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    odd = os.fsdecode(b"bad\xff\xfe.jpg")
    (data / "train" / "cats" / "cats0.jpg").rename(data / "train" / "cats" / odd)
    result = extract_features(data, config(tmp_path), progress=False)
    paths = FeatureCache(result.path).load("train").paths
    stored = next(p for p in paths if p.startswith("train/cats/bad"))
    assert os.fsencode(stored) == b"train/cats/bad\xff\xfe.jpg"
    assert (data / stored).is_file()


def test_a_changed_keras_model_is_refused_without_talking_of_joblib(run, tmp_path, capsys):
    from pipeline.runs import load_model

    keras_file = run / "models" / "dense.keras"
    keras_file.write_bytes(keras_file.read_bytes() + b"\0")
    with pytest.raises(Exception) as refused:
        load_model(run, "dense")
    assert "does not match the checksum" in str(refused.value)
    assert "joblib" not in str(refused.value)
    assert "it would not be the model the run measured" in str(refused.value)


def test_a_run_folder_that_is_a_link_is_refused_and_its_target_kept(tmp_path, stage2_run, feature_cache,
                                                                     capsys):
    import shutil

    target = tmp_path / "elsewhere"
    shutil.copytree(stage2_run, target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    link = tmp_path / "run"
    link.symlink_to(target, target_is_directory=True)
    assert main(["compare", "--features", str(feature_cache), "--out", str(link), "--overwrite",
                 "--classifiers", "logreg"]) == 2
    err = capsys.readouterr().err
    assert f"`--out` {link} is a link" in err and "Traceback" not in err
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def test_an_export_over_a_link_planted_under_its_own_name_leaves_the_target(tmp_path, stage2_run):
    out = tmp_path / "export"
    assert main(["export", "--run", str(stage2_run), "--model", "dense", "--format", "savedmodel",
                 "--out", str(out), "--images", "4"]) == 0
    exported = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    users = tmp_path / "mine"
    users.mkdir()
    (users / "thesis.tex").write_text("mine")
    import shutil
    shutil.rmtree(exported)
    exported.symlink_to(users, target_is_directory=True)
    assert main(["export", "--run", str(stage2_run), "--model", "dense", "--format", "savedmodel",
                 "--out", str(out), "--images", "4"]) == 0
    assert (users / "thesis.tex").read_text() == "mine" and sorted(users.iterdir()) == [users / "thesis.tex"]
    assert exported.is_dir() and not exported.is_symlink()


def test_a_damaged_segment_that_cannot_be_set_aside_is_read_no_more(tmp_path, caplog):
    data = make_dataset(tmp_path / "data")
    clean = by_path(extract_features(data, config(tmp_path), progress=False))
    store = next((tmp_path / "cache" / "store").iterdir())
    users = tmp_path / "mine"
    users.mkdir()
    (users / "x.txt").write_text("mine")
    (store / "damaged").symlink_to(users, target_is_directory=True)
    segment = sorted(store.glob("seg-*.h5"))[0]
    with h5py.File(segment, "r") as h5:
        offset = h5["features"].id.get_chunk_info(0).byte_offset + 8
    with open(segment, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    again = extract_features(data, config(tmp_path, split=SplitConfig(test_from_validation=0.5)),
                             progress=False)
    assert "damaged is a link or not a folder" in caplog.text and again.computed > 0
    got = by_path(again)
    for path, row in clean.items():
        np.testing.assert_allclose(got[path], row, rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in users.iterdir()) == ["x.txt"] and segment.is_file()
