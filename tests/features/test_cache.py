"""Reading a cache file: every way it can be wrong gets its own message."""

import h5py
import pytest

from pipeline import ExtractConfig, FeatureCache, extract_features
from pipeline.errors import CacheError


@pytest.fixture
def cache_file(tmp_path, tiny_data):
    cfg = ExtractConfig(weights="none", image_size=32, cache_dir=str(tmp_path / "cache"))
    return extract_features(tiny_data, cfg).path


def test_summary_describes_the_file(cache_file):
    summary = FeatureCache(cache_file).summary()
    assert summary["splits"] == {"train": 12, "validation": 12}
    assert summary["feature_shape"] == [256] and summary["dtype"] == "float32"
    assert summary["key"]["backbone"] == "mobilenet" and summary["key"]["weights"] == "none"
    assert summary["classes"] == ["cats", "dogs"]
    assert summary["extraction"]["images"] == 24
    assert {"tensorflow", "keras", "h5py", "numpy"} <= set(summary["library_versions"])


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "does not exist, but the feature store holds rows its extraction computed"),
    (lambda p: p.with_name("other-0123456789abcdef.h5"), None),
    (lambda p: p.write_bytes(b"nope"), "is not a feature cache: it is not an HDF5 file"),
    (lambda p: p.write_bytes(p.read_bytes()[:2048]), "is damaged: it cannot be read as HDF5"),
    (lambda p: h5py.File(p, "w").close(), "is an HDF5 file but not a feature cache written by this tool"),
    (lambda p: h5py.File(p, "a").attrs.__setitem__("format_version", 99),
     "has cache format 99; this version reads formats 1, 2. Fix: run extract again"),
    (lambda p: h5py.File(p, "a").attrs.__setitem__("key_hash", "x"),
     "is damaged: its metadata (attributes, paths or reasons) does not match its checksum"),
])
def test_bad_cache_files(cache_file, damage, message):
    if message is None:  # a name no extraction wrote
        cache_file, message = damage(cache_file), "does not exist. Fix: run `python run_pipeline.py extract"
    else:
        damage(cache_file)
    with pytest.raises(CacheError) as err:
        FeatureCache(cache_file)
    assert message in str(err.value)


def test_stale_against_an_expected_key(cache_file):
    key = dict(FeatureCache(cache_file).key, image_size=64)
    with pytest.raises(CacheError, match="is stale: it was made with different image_size"):
        FeatureCache(cache_file, expected_key=key)


def test_unknown_split(cache_file):
    with pytest.raises(CacheError, match="Split 'test' is not in .*; it has train, validation"):
        FeatureCache(cache_file).load("test")
