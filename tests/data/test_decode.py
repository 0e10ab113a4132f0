"""Decoding every image a user has: EXIF orientation, WebP/TIFF, the pixel budget, and a fuzz run."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline import ExtractConfig, extract_features
from pipeline.config import SplitConfig
from pipeline.data.decode import Decoding, load_image, probe
from pipeline.features.store import FeatureStore

from conftest import COLOURS, write_image

ROOT = Path(__file__).resolve().parents[2]


def _pattern(height=48, width=64) -> np.ndarray:
    """Pixels that look different turned or mirrored (no symmetry)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, np.zeros_like(x)], -1)
    pixels[: height // 3, : width // 4] = (255, 255, 255)  # a block in one corner
    return pixels.astype("uint8")


def _with_orientation(pixels: np.ndarray, path: Path, orientation: int, **save) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **save)
    return path


def _png(path: Path, width: int, height: int, rows: bytes | None = None, mode=0) -> Path:
    """A PNG written chunk by chunk, so its header may claim what its data lacks."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if rows is None:  # gray zeros, compressed as they stream: a decompression bomb
        packer = zlib.compressobj(9)
        line = bytes(width + 1)
        rows = b"".join(packer.compress(line) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows)
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("form", ["JPEG", "WEBP"])  # TensorFlow's decoder, and Pillow's
@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation, form):
    import tensorflow as tf

    path = _with_orientation(_pattern(), tmp_path / "photo", orientation, format=form,
                             **({"lossless": True} if form == "WEBP" else {"quality": 100}))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    decoding = Decoding(size=40)
    found = probe(path.read_bytes(), decoding)
    assert (found.orientation, found.pillow, found.refused) == (orientation, form == "WEBP", None)
    ours = load_image(str(path), decoding).numpy()
    # Pillow and TensorFlow decode JPEG chroma slightly differently (about 1 gray level).
    assert np.abs(ours - tf.image.resize(expected, (40, 40)).numpy()).mean() < 2  # of 255
    ignored = load_image(str(path), Decoding(size=40, orientation="ignore")).numpy()
    assert orientation == 1 or np.abs(ignored - ours).mean() > 20


def test_an_exif_rotated_photo_gets_the_features_of_its_upright_version(tmp_path):
    upright = np.repeat(np.repeat(_pattern(), 2, 0), 2, 1)  # 96 x 128
    stored = np.rot90(upright, 1).copy()  # as a phone held sideways stores it
    data = tmp_path / "data"
    for cls, colour in COLOURS.items():
        for i in range(3):
            write_image(data / cls / f"{cls}{i}.jpg", colour, seed=i)
    Image.fromarray(upright).save(data / "cats" / "upright.jpg", quality=95)
    _with_orientation(stored, data / "cats" / "phone.jpg", 6, quality=95)  # viewers turn it upright
    Image.fromarray(stored).save(data / "cats" / "sideways.jpg", quality=95)
    rows = {}
    for orientation in ("exif", "ignore"):
        config = ExtractConfig(weights="none", backbone="vgg16", image_size=64, orientation=orientation,
                               cache_dir=str(tmp_path / "cache"),
                               split=SplitConfig(0.0, 0.0))
        view = extract_features(data, config, progress=False).open().load("train")
        rows[orientation] = {Path(p).name: f for p, f in zip(view.paths, view.features)}
    exif = rows["exif"]
    to_upright = np.linalg.norm(exif["phone.jpg"] - exif["upright.jpg"])
    to_sideways = np.linalg.norm(exif["phone.jpg"] - exif["sideways.jpg"])
    assert to_upright < 0.2 * to_sideways
    np.testing.assert_array_equal(rows["ignore"]["phone.jpg"], rows["ignore"]["sideways.jpg"])


def test_webp_and_tiff_decode_to_the_pixels_of_the_same_png(tmp_path):
    pixels = _pattern()
    paths = {}
    for name, options in {"a.png": {}, "a.webp": {"lossless": True}, "a.tif": {}, "a.tiff": {"compression": "tiff_lzw"}}.items():
        paths[name] = tmp_path / name
        Image.fromarray(pixels).save(paths[name], **options)
    decoding = Decoding(size=32)
    assert not probe(paths["a.png"].read_bytes(), decoding).pillow
    assert probe(paths["a.webp"].read_bytes(), decoding).pillow
    reference = load_image(str(paths["a.png"]), decoding).numpy()
    for name in ("a.webp", "a.tif", "a.tiff"):
        np.testing.assert_array_equal(load_image(str(paths[name]), decoding).numpy(), reference)


def test_images_over_the_pixel_budget_are_refused_by_setting_not_by_content(tmp_path, tiny_data):
    write_image(tiny_data / "train" / "cats" / "large.png", size=(40, 50))  # 2000 pixels
    tight = ExtractConfig(weights="none", image_size=32, max_pixels=1999, cache_dir=str(tmp_path / "c"))
    first = extract_features(tiny_data, tight, progress=False)
    reasons = {q["path"]: q["reason"] for q in first.quarantined}
    assert list(reasons) == ["train/cats/large.png"]
    assert reasons["train/cats/large.png"] == (
        "its header claims 50 x 40 = 2000 pixels, more than the pixel budget `max_pixels` = 1999. "
        "Fix: raise `max_pixels` to decode such images.")
    assert first.computed == 24
    store = FeatureStore(next((tmp_path / "c" / "store").iterdir()))
    assert store.index().bad == {}, "a refusal is a setting of the view, not a fact of the image"
    again = extract_features(tiny_data, ExtractConfig(weights="none", image_size=32,
                                                     cache_dir=str(tmp_path / "c")), progress=False)
    assert again.quarantined == [] and again.computed == 1 and again.reused == 24
    assert again.path != first.path


def _fuzz_folder(root: Path) -> dict[str, str]:
    """Every kind of file a photo folder may hold; name -> what it is."""
    cats, dogs = root / "cats", root / "dogs"
    for i in range(4):
        write_image(dogs / f"dog{i}.jpg", COLOURS["dogs"], seed=i)
        write_image(cats / f"cat{i}.jpg", COLOURS["cats"], seed=10 + i)
    pixels = _pattern()
    kinds = {}

    def add(name, what, make):
        make(cats / name)
        kinds[f"cats/{name}"] = what

    add("dangling.jpg", "a dangling symbolic link", lambda p: p.symlink_to(root / "gone.jpg"))
    add("bomb.png", "a 20000 x 20000 PNG of 0.4 MB", lambda p: _png(p, 20000, 20000))
    add("huge.png", "a 30000 x 30000 PNG header", lambda p: _png(p, 30000, 30000, rows=zlib.compress(b"")))
    add("lying.png", "a 100 x 100 PNG header over 10 x 10 pixels",
        lambda p: _png(p, 100, 100, rows=zlib.compress(bytes(11 * 10))))
    add("zero.png", "a 0 x 0 PNG", lambda p: _png(p, 0, 0, rows=zlib.compress(b"")))
    add("photo.webp", "WebP", lambda p: Image.fromarray(pixels).save(p))
    add("photo.tiff", "TIFF", lambda p: Image.fromarray(pixels).save(p))
    add("phone.jpg", "JPEG with EXIF orientation 6", lambda p: _with_orientation(pixels, p, 6))
    add("animated.gif", "an animated GIF", lambda p: Image.fromarray(pixels).save(
        p, save_all=True, append_images=[Image.fromarray(255 - pixels)], duration=100, loop=0))
    add("cmyk.jpg", "a CMYK JPEG", lambda p: Image.fromarray(pixels).convert("CMYK").save(p))
    add("deep.png", "a 16-bit PNG", lambda p: Image.fromarray((pixels[..., 0].astype("uint16") * 257)).save(p))
    add("LOUD.JPG", "an upper-case extension", lambda p: Image.fromarray(pixels).save(p, format="JPEG"))
    add("new\nline.jpg", "a newline in the name", lambda p: Image.fromarray(pixels).save(p, format="JPEG"))
    add("l" * 240 + ".jpg", "a 244-byte name", lambda p: Image.fromarray(pixels).save(p, format="JPEG"))
    add("empty.jpg", "an empty file", lambda p: p.write_bytes(b""))
    add("text.jpg", "text named .jpg", lambda p: p.write_text("not a picture"))
    add("truncated.jpg", "a truncated JPEG",
        lambda p: p.write_bytes((dogs / "dog0.jpg").read_bytes()[:300]))
    add("z.jpg", "a 20 GB sparse file", lambda p: os.truncate(p.open("wb").name, 20 * 2**30))
    add("y.jpg", "a link to /dev/zero", lambda p: p.symlink_to("/dev/zero"))
    add("pipe.jpg", "a FIFO", lambda p: os.mkfifo(p))
    return kinds


def _peak_mib(command: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command; its peak resident memory, from a parent that runs nothing else."""
    measure = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True,
                          env=env, timeout=600)
    *rest, peak = done.stderr.rstrip().split("\n")
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, "\n".join(rest)), \
        int(peak) / 1024


# The folder's odd files may cost memory only by a margin over the same
# command on its plain photos alone: the whole process peaks at 0.8-1.0 GiB
# depending on the machine (TensorFlow, OpenVINO), while decoding the
# 20000 x 20000 bomb took 1.9 GB more before the pixel budget refused it,
# reading the 20 GB file 21 GB, and /dev/zero without end.
MARGIN_MIB = 100


def _plain_photos(data: Path, root: Path) -> Path:
    """The fuzz folder's ordinary JPEGs alone, in the same class folders."""
    for photo in data.glob("*/*[0-9].jpg"):
        (root / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / photo.parent.name / photo.name)
    return root


@pytest.mark.slow
def test_fuzz_every_file_a_folder_may_hold_is_decoded_or_quarantined(tmp_path, stage2_run):
    data = tmp_path / "photos"
    kinds = _fuzz_folder(data)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    script = str(ROOT / "run_pipeline.py")
    plain = _plain_photos(data, tmp_path / "plain")

    def extract_command(folder: Path, cache: str) -> list[str]:
        return [sys.executable, script, "extract", "--data", str(folder), "--weights", "none",
                "--image-size", "32", "--cache-dir", str(tmp_path / cache), "--validation-fraction", "0",
                "--test-fraction", "0", "--json", "--no-progress"]

    _, baseline = _peak_mib(extract_command(plain, "plain-cache"), env)
    extract, peak = _peak_mib(extract_command(data, "cache"), env)
    assert extract.returncode == 0, extract.stderr[-3000:]
    assert "Traceback" not in extract.stderr and "JPEG library" not in extract.stderr
    assert "WARNING pipeline.features.compute: quarantined cats/bomb.png: its header" in extract.stderr
    assert peak < baseline + MARGIN_MIB, f"extraction peaked at {peak:.0f} MiB, plain photos at {baseline:.0f}"
    result = json.loads(extract.stdout)
    reasons = {q["path"]: q["reason"] for q in result["quarantined"]}
    assert all(reasons.values())
    assert set(reasons) == {f"cats/{name}" for name in (
        "dangling.jpg", "bomb.png", "huge.png", "lying.png", "zero.png", "empty.jpg", "text.jpg",
        "truncated.jpg", "z.jpg", "y.jpg", "pipe.jpg")}, reasons
    assert reasons["cats/z.jpg"] == (f"is {20 * 2**30:,} bytes, more than `max_file_bytes` = "
                                     f"{512 * 2**20:,}. Fix: raise `max_file_bytes` if it is a real image")
    for name in ("y.jpg", "pipe.jpg"):
        assert reasons[f"cats/{name}"] == ("is not a regular file (a device, FIFO, socket or folder), "
                                           "so it is not read")
    assert reasons["cats/bomb.png"].startswith("its header claims more than 178956970 pixels, more "
                                               "than the pixel budget `max_pixels` = 89478485.")
    assert "No such file or directory" in reasons["cats/dangling.jpg"]
    assert result["splits"] == {"train": 8 + len(kinds) - len(reasons)}
    assert result["ignored"] == []

    _, baseline = _peak_mib([sys.executable, script, "predict", "--run", str(stage2_run), str(plain)], env)
    predicted, peak = _peak_mib([sys.executable, script, "predict", "--run", str(stage2_run), str(data),
                                 "--json"], env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "Traceback" not in predicted.stderr
    assert peak < baseline + MARGIN_MIB, f"predict peaked at {peak:.0f} MiB, plain photos at {baseline:.0f}"
    out = json.loads(predicted.stdout)
    classified = {str(Path(r["path"]).relative_to(data)) for r in out["predictions"]}
    refused = {str(Path(r["path"]).relative_to(data)): r["reason"] for r in out["unreadable"]}
    assert classified | set(refused) == {*kinds, *(f"{c}/{c[:3]}{i}.jpg" for c in ("cats", "dogs") for i in range(4))}
    assert set(refused) == set(reasons) and all(refused.values())
