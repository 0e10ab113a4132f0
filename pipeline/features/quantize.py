"""int8 stage 1: the spec's OpenVINO model quantized by NNCF, once per feature spec.

``--precision int8`` is a feature spec of its own (its numbers differ from
float32's), so its rows are shared by every later dataset of that spec. The
model is quantized with NNCF's post-training quantization (``nncf.quantize``)
on a seeded sample of up to :data:`MOST` images of the first dataset
extracted under the spec, decoded exactly as extraction decodes them, and
kept in the store folder with the sha256 of its files and what calibrated it
(the images' content digests and NNCF's settings, ``calibration.json``), so
predict, suggest and drift run the very model that computed the rows.

Bias correction: the full one (``fast_bias_correction=False``). On MobileNet
0.25 @224 it brought the features' median relative distance from float32 from
0.19 (fast) to 0.08 for 1.6 s more (BENCHMARKS.md), and NNCF's own reference
data show small models losing many points with the fast one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .kept import CALIBRATION, checked_text, keep, read

log = logging.getLogger(__name__)

FEWEST = 32  # calibration images, at least: fewer give activation ranges of no use
MOST = 300  # and at most: NNCF's default subset size
SETTINGS = {"fast_bias_correction": False, "preset": "performance"}


def kept_path(ov, folder: Path) -> Path:
    """Where a store folder keeps its int8 model, for this OpenVINO version."""
    return folder / f"openvino-{ov.__version__.split('-')[0]}-int8" / "model.xml"


def calibration_of(view) -> dict | None:
    """What calibrated the int8 model a view's rows came from (None: not an int8 view, or its
    record is gone or fails its checksum), read from the store beside it without loading OpenVINO."""
    from importlib import metadata

    if view.key.get("precision") != "int8" or not view.store:
        return None
    version = metadata.version("openvino").split("-")[0]
    text = checked_text(view.path.parent / view.store / f"openvino-{version}-int8", CALIBRATION)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def check_enough(images: int, folder: Path) -> None:
    """Refuse, before any work, to calibrate on fewer than :data:`FEWEST` images (a kept model
    needs none)."""
    import openvino as ov

    if images < FEWEST and not kept_path(ov, folder).is_file():
        raise ConfigError(
            f"`--precision int8` calibrates on at least {FEWEST} readable images of the dataset; "
            f"it has {images}. Fix: extract a larger dataset first (its int8 model serves every "
            "later one), or use `--precision float32`.")


def sample(fingerprints: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    """A seeded sample of up to :data:`MOST` of ``(fingerprint, path)``, each content once."""
    unique = sorted(dict(fingerprints).items())
    if len(unique) <= MOST:
        return unique
    chosen = np.random.default_rng(seed).choice(len(unique), MOST, replace=False)
    return [unique[i] for i in sorted(chosen)]


def quantized(ov, model, folder: Path | None, calibration):
    """The int8 model of this spec: the kept one, or ``model`` quantized now and kept.

    Args:
        calibration: None, or a callable giving ``(pixels, fingerprints)`` of
            the calibration images (pixels as extraction decodes them).

    Raises:
        ConfigError: no kept model and no images to calibrate one; fewer than
            :data:`FEWEST` of them; NNCF is missing or cannot quantize it.
    """
    xml = kept_path(ov, folder) if folder is not None else None
    if xml is not None and xml.is_file():
        kept = read(ov, xml, "int8 model")
        if kept is not None:
            return kept
    if calibration is None:
        raise ConfigError(
            f"The int8 model of this feature spec is not kept in {folder}, and only an extraction "
            "calibrates one. Fix: run the same `python run_pipeline.py extract --precision int8 ...` "
            "again, then this command.")
    try:
        import nncf
    except ImportError:
        raise ConfigError("`--precision int8` needs NNCF, OpenVINO's quantizer. Fix: pip install "
                          "nncf, or use `--precision float32`.") from None
    pixels, digests = calibration()
    check_enough(len(pixels), folder)
    log.info("quantizing the network to int8 with NNCF on %d images (once for this feature spec)",
             len(pixels))
    try:
        int8 = nncf.quantize(model, nncf.Dataset([pixels[i:i + 1] for i in range(len(pixels))]),
                             subset_size=len(pixels), fast_bias_correction=SETTINGS["fast_bias_correction"],
                             preset=nncf.QuantizationPreset.PERFORMANCE)
    except Exception as exc:  # noqa: BLE001 - any quantizer failure gets the same sentence
        raise ConfigError(f"NNCF could not quantize this network to int8 ({exc}). Fix: use "
                          "`--precision float32`.") from None
    if xml is not None:
        record = {"images": sorted(digests), "nncf": nncf.__version__, **SETTINGS}
        keep(ov, int8, xml, {CALIBRATION: json.dumps(record, indent=1)})
    return int8
