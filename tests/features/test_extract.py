"""Stage 1: the view key, quarantine, resume and crash safety."""

import shutil

import h5py
import numpy as np
import pytest

from pipeline import ExtractConfig, FeatureCache, extract_features
from pipeline import backbones
from pipeline.features.store import FeatureStore
from pipeline.errors import CacheError

from conftest import make_dataset, write_image


def config(tmp_path, **kwargs):
    return ExtractConfig(**{"weights": "none", "image_size": 32, "batch_size": 4, "chunk_size": 4,
                            "cache_dir": str(tmp_path / "cache"), **kwargs})


def arrays(path):
    with h5py.File(path, "r") as h5:
        return {s: {k: h5[s][k][()] for k in ("features", "labels", "paths", "fingerprints")}
                for s in h5}


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for split in a:
        for name in a[split]:
            np.testing.assert_array_equal(a[split][name], b[split][name], err_msg=f"{split}/{name}")


def test_extract_writes_every_split_and_a_hit_skips_the_backbone(tmp_path, tiny_data, monkeypatch):
    cfg = config(tmp_path)
    first = extract_features(tiny_data, cfg)
    assert not first.hit
    assert first.splits == {"train": 12, "validation": 12}
    assert first.feature_shape == (256,)
    cache = first.open()
    train = cache.load("train")
    assert train.features.shape == (12, 256) and train.features.dtype == np.float32
    assert [cache.classes[l] for l in train.labels] == [p.split("/")[1] for p in train.paths]
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name or p.suffix == ".lock"]

    def no_build(*args, **kwargs):
        raise AssertionError("a cache hit must not build the backbone")

    monkeypatch.setattr(backbones, "build", no_build)
    second = extract_features(tiny_data, cfg)
    assert second.hit and second.path == first.path
    # Touching files (mtime) is not a change: the key is content-based.
    for path in tiny_data.rglob("*.jpg"):
        path.touch()
    assert extract_features(tiny_data, cfg).hit
    # Moving the dataset folder is not a change either: paths are relative.
    moved = shutil.move(tiny_data, tmp_path / "moved")
    assert extract_features(moved, cfg).path == first.path


def test_changing_one_image_is_a_miss(tmp_path, tiny_data):
    cfg = config(tmp_path)
    first = extract_features(tiny_data, cfg)
    write_image(tiny_data / "train" / "cats" / "cats0.jpg", seed=99)
    second = extract_features(tiny_data, cfg)
    assert not second.hit and second.path != first.path and second.computed == 1


@pytest.mark.parametrize("change", [dict(pooling="max"), dict(image_size=40), dict(dtype="float16"),
                                    dict(seed=1), dict(decode="full")])
def test_every_feature_setting_is_in_the_key(tmp_path, tiny_data, change):
    base = extract_features(tiny_data, config(tmp_path)).path
    other = extract_features(tiny_data, config(tmp_path, **change))
    assert not other.hit and other.path != base and other.computed == 24


def test_spatial_features_and_float16(tmp_path, tiny_data):
    result = extract_features(tiny_data, config(tmp_path, pooling="none", dtype="float16", image_size=64))
    data = result.open().load("validation")
    assert data.features.shape == (12, 2, 2, 256) and data.features.dtype == np.float16


def test_unreadable_images_are_quarantined_not_fatal(tmp_path, tiny_data):
    cats = tiny_data / "train" / "cats"
    (cats / "text.jpg").write_text("this is not a picture")
    (cats / "empty.png").write_bytes(b"")
    good = (cats / "cats0.jpg").read_bytes()
    (cats / "truncated.jpg").write_bytes(good[: len(good) // 3])
    write_image(cats / "fine.png", fmt="PNG")
    write_image(cats / "fine.bmp")
    write_image(cats / "fine.gif")
    result = extract_features(tiny_data, config(tmp_path))
    reasons = {q["path"]: q["reason"] for q in result.quarantined}
    assert set(reasons) == {"train/cats/text.jpg", "train/cats/empty.png", "train/cats/truncated.jpg"}
    assert "Unknown image file format" in reasons["train/cats/text.jpg"]
    assert all(reasons.values())
    assert result.splits["train"] == 12 + 3
    cache = result.open()
    assert cache.quarantined == [dict(split="train", path=p, reason=reasons[p]) for p in
                                 [q["path"] for q in result.quarantined]]
    assert not set(reasons) & set(cache.load("train").paths)


def test_full_decode_matches_keras_image_dataset_from_directory(tmp_path, tiny_data):
    import keras

    cfg = config(tmp_path, decode="full")
    cache = extract_features(tiny_data, cfg).open()
    ours = cache.load("validation")
    ds = keras.utils.image_dataset_from_directory(tiny_data / "validation", image_size=(32, 32),
                                                  shuffle=False, batch_size=8)
    model = backbones.build(backbones.resolve(image_size=32, weights="none"), seed=0)
    theirs = model.predict(ds, verbose=0)
    order = [str(p).split("data/")[-1] for p in ds.file_paths]
    assert order == ours.paths
    np.testing.assert_allclose(ours.features, theirs, rtol=1e-4, atol=1e-5)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=10)
    reference = extract_features(data, config(tmp_path, cache_dir=str(tmp_path / "a")))
    cfg = config(tmp_path, cache_dir=str(tmp_path / "b"))
    original = FeatureStore.write_segment
    written = []

    def killed_after_three(self, fingerprints, *args, **kwargs):
        if len(written) == 3:  # the fourth chunk of train: mid-split
            raise KeyboardInterrupt("killed")
        written.append(len(fingerprints))
        return original(self, fingerprints, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_segment", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        extract_features(data, cfg)
    monkeypatch.undo()
    assert written == [4, 4, 4]
    assert not list((tmp_path / "b").glob("*.h5")), "nothing may look complete"
    store = next((tmp_path / "b" / "store").iterdir())
    (store / "seg-0123.h5.tmp-99").write_bytes(b"half a chunk")  # a write cut short
    resumed = extract_features(data, cfg)
    assert resumed.resumed_images == 12 and resumed.computed == 28
    assert resumed.path.name == reference.path.name
    assert_same_arrays(arrays(resumed.path), arrays(reference.path))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:1000]),          # truncated
    lambda p: p.write_bytes(b"plain text, not HDF5"),          # not HDF5
    lambda p: h5py.File(p, "w").close(),                       # HDF5, not ours
    lambda p: h5py.File(p, "a").attrs.__setitem__("key_hash", "0" * 64),  # damaged key
])
def test_a_damaged_or_foreign_cache_file_is_rebuilt(tmp_path, tiny_data, damage):
    cfg = config(tmp_path)
    first = extract_features(tiny_data, cfg)
    reference = arrays(first.path)
    damage(first.path)
    again = extract_features(tiny_data, cfg)
    assert not again.hit
    assert_same_arrays(arrays(again.path), reference)


def test_unwritable_cache_folder(tmp_path, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CacheError) as err:
        extract_features(tiny_data, config(tmp_path, cache_dir=str(blocker / "cache")))
    assert f"`cache_dir` {blocker / 'cache'} cannot be written" in str(err.value)
    assert "Fix: pass a folder you can write" in str(err.value)


def test_large_jpegs_decode_at_reduced_scale_close_to_full(tmp_path):
    from PIL import Image

    from pipeline.data.decode import Decoding, load_image

    y, x = np.mgrid[0:600, 0:800]
    smooth = np.stack([x * 255 / 800, y * 255 / 600, (x + y) * 255 / 1400], -1).astype("uint8")
    path = str(tmp_path / "big.jpg")
    Image.fromarray(smooth).save(path, quality=95)
    auto = load_image(path, Decoding(64, "auto")).numpy()   # 1/8 decode: 100 x 75, then resize
    full = load_image(path, Decoding(64, "full")).numpy()
    assert auto.shape == full.shape == (64, 64, 3)
    assert not np.array_equal(auto, full)
    assert np.abs(auto - full).mean() < 3.0  # gray levels of 255
    assert load_image(path, Decoding(400, "auto")).numpy().shape == (400, 400, 3)


def test_a_weights_file_is_named_by_its_hash_and_must_be_given_again_unchanged(tmp_path):
    from pipeline.errors import WeightsError
    from pipeline.features.spec import feature_spec, spec_from_key

    path = tmp_path / "quarter.weights.h5"
    random = backbones.resolve("mobilenet", image_size=32, weights="none")
    backbones.build(random, seed=1).layers[-1].save_weights(path)
    spec = backbones.resolve("mobilenet", image_size=32, weights=str(path))
    key = feature_spec(spec, ExtractConfig(weights=str(path), image_size=32))
    assert key["weights"] == spec.weights_identity and key["weights"].startswith("sha256:")
    assert spec_from_key(key, path) == spec
    with pytest.raises(WeightsError, match=r"^Stage 1 used a weights file \(sha256:[0-9a-f]{64}\)\. "
                                           r"Fix: pass it again with `--weights PATH`\.$"):
        spec_from_key(key)
    backbones.build(random, seed=2).layers[-1].save_weights(path)
    with pytest.raises(WeightsError, match=r"^`weights` .*quarter\.weights\.h5 is not what stage 1 used "
                                           r"\(sha256:[0-9a-f]{64}\)\. Fix: pass the weights or model stage "
                                           r"1 used, or extract again\.$"):
        spec_from_key(key, path)


def test_a_run_made_with_a_weights_file_finds_it_again_while_it_is_unchanged(tmp_path, capsys):
    from pipeline import CompareConfig, compare
    from pipeline.cli import main
    from pipeline.errors import WeightsError
    from pipeline.features.spec import spec_from_key

    path = tmp_path / "mine.weights.h5"
    backbones.build(backbones.resolve("vgg16", image_size=32, weights="none"), seed=1).layers[-1].save_weights(path)
    data = make_dataset(tmp_path / "data", per_class=4)
    cache = extract_features(data, ExtractConfig(backbone="vgg16", weights=str(path), image_size=32,
                                                 cache_dir=str(tmp_path / "cache")))
    run = compare(cache.path, CompareConfig(classifiers=("logreg",), out=str(tmp_path / "run"))).run_dir
    key = FeatureCache(cache.path).key
    assert key["weights_file"] == str(path.resolve())
    pool = make_dataset(tmp_path / "pool", splits=(), per_class=3, classes=("owls", "cats"))
    assert main(["suggest", "--run", str(run), "--pool", str(pool), "--n", "2"]) == 0  # no --weights
    assert main(["drift", "--run", str(run), "--batch", str(pool), "--no-record"]) == 0
    capsys.readouterr()
    backbones.build(backbones.resolve("vgg16", image_size=32, weights="none"), seed=2).layers[-1].save_weights(path)
    with pytest.raises(WeightsError, match=r"mine\.weights\.h5, the weights file stage 1 used, no longer holds "
                                           r"what stage 1 used \(sha256:[0-9a-f]{64}\)"):
        spec_from_key(key)
    path.unlink()
    with pytest.raises(WeightsError, match=r"^Stage 1 used a weights file \(sha256:[0-9a-f]{64}, at .*mine"
                                           r"\.weights\.h5, which is gone\)\. Fix: pass it again"):
        spec_from_key(key)
