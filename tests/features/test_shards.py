"""Sharded extraction and merge, on a dataset and cache under paths with spaces and non-ASCII."""

import json
import shutil

import h5py
import numpy as np
import pytest

from pipeline import ExtractConfig, extract_features
from pipeline.features import FeatureCache
from pipeline.cli import main
from pipeline.errors import CacheError, ConfigError
from pipeline.features.shards import merge, owned_chunks, parse_shard

from conftest import make_dataset

WEIRD = "my cache/ünïcødé 猫"


def config(root, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 4,
                            "cache_dir": str(root / WEIRD), **kwargs})


def arrays(path):
    with h5py.File(path, "r") as h5:
        return {s: {k: h5[s][k][()] for k in ("features", "labels", "paths", "fingerprints",
                                               "quarantine/paths", "quarantine/reasons")}
                for s in h5}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One dataset (with a corrupt image), extracted whole and as 3 shards."""
    root = tmp_path_factory.mktemp("shards")
    data = make_dataset(root / "data set ü", per_class=9)
    (data / "train" / "dogs" / "broken dög 1.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    whole = extract_features(data, config(root / "whole"))
    parts = [extract_features(data, config(root / "parts"), shard=(i, 3)) for i in (1, 2, 3)]
    return root, data, whole, parts


def test_shards_merged_equal_the_unsharded_cache_exactly(sharded, tmp_path):
    root, data, whole, parts = sharded
    assert whole.quarantined and " dög " in whole.quarantined[0]["path"]
    assert sum(p.splits["train"] for p in parts) == whole.splits["train"] == 18
    assert [p.path.name.rsplit(".", 2)[-2] for p in parts] == ["shard-1-of-3", "shard-2-of-3",
                                                               "shard-3-of-3"]
    merged = merge([p.path for p in reversed(parts)])  # any order
    assert merged.name == whole.path.name and merged.parent == parts[0].path.parent
    with h5py.File(merged, "r") as h5:
        assert h5["train/features"].is_virtual and h5["validation/labels"].is_virtual
    ours, theirs = arrays(merged), arrays(whole.path)
    assert ours.keys() == theirs.keys() == {"train", "validation"}
    for split in ours:
        for name in ours[split]:
            np.testing.assert_array_equal(ours[split][name], theirs[split][name],
                                          err_msg=f"{split}/{name}")
    # Readers use it like any cache file, and extract finds it: a cache hit.
    cache = FeatureCache(merged)
    assert cache.counts == whole.splits and cache.extraction["shards"] == 3
    assert cache.load("train").features.shape == (18, 256)
    again = extract_features(data, config(root / "parts"))
    assert again.hit and again.path == merged
    # The shards and the merged file move together (the mapping is relative).
    moved = shutil.copytree(merged.parent, tmp_path / "elsewhere ü")
    np.testing.assert_array_equal(FeatureCache(moved / merged.name).load("validation").features,
                                  theirs["validation"]["features"])


def test_merge_refuses_a_missing_duplicated_or_foreign_shard(sharded, tmp_path):
    root, data, whole, parts = sharded
    one, two, three = (p.path for p in parts)
    cases = [
        ([one, three], "Shard 2 of 3 is missing, so the merged cache would lack their rows. "
                       "Fix: run `extract --shard I/3` for I = 2"),
        ([one, two, two, three], f"Shard 2 of 3 is given twice ({two} and {two}); their rows "
                                 "overlap. Fix: pass each shard file once."),
        ([one, two, three, whole.path], f"{whole.path} is a whole cache file, not a shard."),
        ([], "`merge` needs the shard files"),
    ]
    other = make_dataset(tmp_path / "other", per_class=3)
    foreign = extract_features(other, config(tmp_path), shard=(2, 3)).path
    cases.append(([one, foreign, three], f"{foreign} is a shard of another extraction than {one}"))
    half = extract_features(data, config(tmp_path), shard=(2, 2)).path
    cases.append(([one, half], f"{half} is shard 2 of 2, but {one} is one of 3."))
    for paths, message in cases:
        with pytest.raises(CacheError) as err:
            merge(paths, tmp_path / "merged.h5")
        assert message in str(err.value)
        assert not (tmp_path / "merged.h5").exists()


def test_a_shard_alone_or_a_merge_missing_a_shard_is_refused(sharded, tmp_path):
    root, data, whole, parts = sharded
    with pytest.raises(CacheError) as err:
        FeatureCache(parts[0].path)
    assert "is shard 1 of 3: it holds only part of the images" in str(err.value)
    folder = shutil.copytree(parts[0].path.parent, tmp_path / "copy")
    merged = merge(sorted(folder.glob("*.shard-*.h5")))
    (folder / parts[1].path.name).unlink()
    with pytest.raises(CacheError) as err:
        FeatureCache(merged)
    assert f"{folder / parts[1].path.name} is missing. Fix: put the shard files back" in str(err.value)


def test_merge_and_shard_on_the_command_line(sharded, tmp_path, capsys):
    root, data, whole, parts = sharded
    folder = tmp_path / "cli ü"
    assert main(["extract", "--data", str(data), "--weights", "none", "--image-size", "32",
                 "--batch-size", "4", "--chunk-size", "4", "--cache-dir", str(folder),
                 "--shard", "2/2", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    # train: 19 images in 5 chunks of 4; shard 2/2 owns chunks 2-4 (11 images, one broken).
    assert result["cache"].endswith(".shard-2-of-2.h5") and result["splits"]["train"] == 10
    assert main(["inspect", result["cache"]]) == 0
    assert "shard          2 of 2" in capsys.readouterr().out
    assert main(["merge", result["cache"]]) == 2
    assert "Shard 1 of 2 is missing" in capsys.readouterr().err
    assert main(["extract", "--data", str(data), "--shard", "3/2"]) == 2
    assert "`--shard` takes I/N with 1 <= I <= N (e.g. 3/16); got '3/2'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0"])
def test_bad_shard_specs(text):
    with pytest.raises(ConfigError, match="`shard` takes I/N"):
        parse_shard(text)


@pytest.mark.parametrize("n_chunks", [0, 1, 5, 16, 17])
@pytest.mark.parametrize("count", [1, 3, 16])
def test_shards_partition_the_chunks(n_chunks, count):
    owned = [list(owned_chunks(n_chunks, parse_shard(f"{i}/{count}"))) for i in range(1, count + 1)]
    assert sum(owned, []) == list(range(n_chunks))  # disjoint, in order, all of them


def test_merge_never_replaces_a_file_it_did_not_write(sharded, tmp_path):
    root, data, whole, parts = sharded
    paths = [p.path for p in parts]
    mine = tmp_path / "notes.h5"
    mine.write_text("my notes")
    with pytest.raises(CacheError, match=r"`out` .*notes.h5 is not a feature cache this tool wrote"):
        merge(paths, mine)
    assert mine.read_text() == "my notes"
    (tmp_path / "zero.h5").symlink_to("/dev/zero")
    with pytest.raises(CacheError, match="is not a feature cache this tool wrote"):
        merge(paths, tmp_path / "zero.h5")
    merged = merge(paths, tmp_path / "merged.h5")
    assert merge(paths, merged) == merged  # its own output: merged again in place
