"""suggest: a folder of unlabelled images ranked for labelling, never one the run has labelled."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline import SuggestConfig, suggest
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.features import FeatureCache
from pipeline.loop.suggest import write_page

from conftest import COLOURS, write_image


def _labelled_paths(run):
    manifest = json.loads((run / "manifest.json").read_text())
    cache = FeatureCache(manifest["cache"]["path"])
    return [cache.path.parent.parent / "data" / p for p in cache.index("train").paths]


@pytest.fixture
def pool(run, tmp_path):
    """Three copies of labelled training images under new names, and six new images (one twice)."""
    folder = tmp_path / "pool"
    folder.mkdir()
    for i, path in enumerate(_labelled_paths(run)[:3]):
        shutil.copy(path, folder / f"copy{i}.jpg")
    for i in range(5):
        write_image(folder / f"new{i}.jpg", COLOURS["cats" if i % 2 else "dogs"], seed=500 + i)
    shutil.copy(folder / "new0.jpg", folder / "new0-again.jpg")
    return folder


def test_images_the_run_has_labelled_are_never_suggested_and_are_counted(run, pool):
    result = suggest(run, pool, SuggestConfig(n=20))
    suggested = [s["path"] for s in result.suggestions]
    assert result.already_labelled == 3 and result.pool == 9
    assert not any("copy" in p for p in suggested)
    assert len(suggested) == 5  # new0 and its copy are one image: offered once
    assert sum("new0" in p for p in suggested) == 1
    assert result.strategy == "margin" and result.chosen_by == "default"
    for s in result.suggestions:
        assert s["predicted"] in ("cats", "dogs") and 0.5 <= s["probability"] <= 1
        assert s["reason"] == "uncertain"
    assert [s["score"] for s in result.suggestions] == sorted((s["score"] for s in result.suggestions),
                                                              reverse=True)


def test_auto_takes_the_strategy_the_run_s_replay_recommended(run, pool):
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "replay.json").write_text(json.dumps({"recommended": "coreset"}))
    manifest["files"].append("replay.json")
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = suggest(run, pool, SuggestConfig(n=2))
    assert (result.strategy, result.chosen_by) == ("coreset", "replay")
    assert len(result.suggestions) == 2 and result.suggestions[0]["reason"] == "novel"
    given = suggest(run, pool, SuggestConfig(n=2, strategy="typiclust"))
    assert (given.strategy, given.chosen_by) == ("typiclust", "given")
    scores = [s["score"] for s in given.suggestions]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert given.suggestions[0]["why"] == (f"representative: more typical than {scores[0]:.0%} of the "
                                           "unlabelled images")


def test_a_pool_of_labelled_images_only_is_refused_with_the_fix(run, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for i, path in enumerate(_labelled_paths(run)[:2]):
        shutil.copy(path, folder / f"again{i}.jpg")
    manifest = json.loads((run / "manifest.json").read_text())
    data = Path(manifest["cache"]["path"]).parent.parent / "data"
    shutil.copy(data / FeatureCache(manifest["cache"]["path"]).index("validation").paths[0], folder / "val.jpg")
    with pytest.raises(ConfigError, match=r"Every readable image under .*old \(3 images\) is already "
                                          r"labelled in run .* \(every split of a run counts as labelled\): "
                                          r"2 are its train photos, 1 its validation photos\. "
                                          r"Fix: pass a folder of new photos."):
        suggest(run, folder)


def test_the_json_has_the_documented_shape(run, pool, capsys):
    assert main(["suggest", "--run", str(run), "--pool", str(pool), "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "margin" and out["already_labelled"] == 3
    assert [set(s) >= {"path", "score", "predicted", "probability", "reason"}
            for s in out["suggestions"]] == [True] * 3


def test_the_page_is_new_or_its_own_never_a_user_s_file(run, pool, tmp_path):
    result = suggest(run, pool, SuggestConfig(n=3))
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my notes</html>")
    with pytest.raises(ConfigError, match="is not a page this tool wrote"):
        write_page(result, mine, str(run))
    assert mine.read_text() == "<html>my notes</html>"
    page = write_page(result, tmp_path / "label.html", str(run))
    text = page.read_text()
    assert text.count("<figure>") == 3 and "data:image/jpeg;base64," in text
    assert write_page(result, page, str(run)) == page  # its own page is replaced
    (tmp_path / "link.html").symlink_to(page)
    with pytest.raises(ConfigError, match="is not a page this tool wrote"):
        write_page(result, tmp_path / "link.html", str(run))


def test_unreadable_images_in_the_pool_are_listed_and_the_rest_ranked(run, pool):
    (pool / "zero.jpg").symlink_to("/dev/zero")
    (pool / "cut.jpg").write_bytes((pool / "new1.jpg").read_bytes()[:200])
    (pool / "notes.png").write_text("not an image")
    result = suggest(run, pool, SuggestConfig(n=20))
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in result.unreadable}
    assert set(reasons) == {"zero.jpg", "cut.jpg", "notes.png"}
    assert "not a regular file" in reasons["zero.jpg"]
    assert len(result.suggestions) == 5


def test_a_flipped_byte_in_the_pool_s_stored_rows_is_never_served(run, pool):
    """The segment is set aside and its images computed again, as extraction does."""
    import h5py

    from pipeline.data.files import fingerprint_file

    first = suggest(run, pool, SuggestConfig(n=5))
    store = next((FeatureCache(json.loads((run / "manifest.json").read_text())["cache"]["path"])
                  .path.parent / "store").iterdir())
    digest = fingerprint_file(str(pool / "new1.jpg"), 2**30).encode()

    def holds(segment):
        with h5py.File(segment, "r") as h5:
            return digest in h5["fingerprints"][()]

    newest = next(p for p in store.glob("seg-*.h5") if holds(p))  # holds a pool image's row
    with h5py.File(newest, "r") as h5:
        offset = h5["features"].id.get_chunk_info(0).byte_offset + 64
    data = bytearray(newest.read_bytes())
    data[offset] ^= 0x01
    newest.write_bytes(bytes(data))
    again = suggest(run, pool, SuggestConfig(n=5))
    assert [s["path"] for s in again.suggestions] == [s["path"] for s in first.suggestions]
    assert [s["score"] for s in again.suggestions] == [s["score"] for s in first.suggestions]
    assert (store / "damaged" / newest.name).is_file()


STORED_POOL = """
import sys
sys.path.insert(0, {root!r})
from pipeline.cli import main
codes = [main(["suggest", "--run", {run!r}, "--pool", {pool!r}, "--n", "2"]),
         main(["drift", "--run", {run!r}, "--batch", {pool!r}])]
print("CODES", codes, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_suggest_and_drift_on_a_stored_pool_import_no_tensorflow(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import make_dataset
    from pipeline import CompareConfig, ExtractConfig, compare, extract_features

    config = ExtractConfig(weights="none", image_size=32, cache_dir=str(tmp_path / "cache"))
    cache = extract_features(make_dataset(tmp_path / "data"), config, progress=False)
    compare(cache.path, CompareConfig(classifiers=("dense",), out=str(tmp_path / "run"),
                                      params={"dense": {"epochs": [3]}}))
    pool = make_dataset(tmp_path / "pool", splits=(), per_class=5, classes=("owls", "cats"))
    extract_features(pool, config, progress=False)  # the pool's features are in the store
    code = STORED_POOL.format(root=str(Path(__file__).resolve().parents[2]), run=str(tmp_path / "run"),
                              pool=str(pool))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "CODES [0, 0] False False" in done.stdout, done.stdout[-1500:] + done.stderr[-1500:]
    assert "predictions by dense" in done.stderr
