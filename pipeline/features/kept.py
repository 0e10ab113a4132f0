"""A model kept in a store folder (the converted network, its int8 twin): written whole, read
only from bytes that match the checksums saved with it, as the store's segments are.

Layout of ``<store>/openvino-<version>[-int8]/``::

    model.xml, model.bin     the OpenVINO model
    checksums.json           the sha256 of each of them, as they were saved
    calibration.json         (int8) what calibrated it, see :mod:`.quantize`
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .._files import sha256_file
from ..errors import first_line

log = logging.getLogger(__name__)

FILES = ("model.xml", "model.bin")
CHECKSUMS = "checksums.json"
CALIBRATION = "calibration.json"
NAMES = (*FILES, CHECKSUMS, CALIBRATION)  # every file a kept model's folder may hold


def read(ov, xml: Path, what: str = "converted model"):
    """The model kept at ``xml``, read from bytes checked against the checksums saved with it.

    A kept model that does not match them (a flipped byte, a truncated file, a
    folder kept before checksums were) would give wrong features under the
    spec's name: it is removed, and None returned so that it is made again.
    """
    try:
        expected = json.loads((xml.parent / CHECKSUMS).read_text())
        data = {name: (xml.parent / name).read_bytes() for name in FILES}
    except (OSError, ValueError) as exc:
        why = first_line(exc)
    else:
        expected = expected if isinstance(expected, dict) else {}
        wrong = [name for name, raw in data.items() if hashlib.sha256(raw).hexdigest() != expected.get(name)]
        if not wrong:
            return ov.Core().read_model(data["model.xml"], data["model.bin"])
        why = f"{' and '.join(wrong)} differ from them"
    log.warning("the %s kept in %s does not match the checksums saved with it (%s); making it "
                "again", what, xml.parent, why)
    shutil.rmtree(xml.parent, ignore_errors=True)
    return None


def checked_text(folder: Path, name: str) -> str | None:
    """A kept folder's extra file (``calibration.json``), when its bytes match the checksum
    saved with it (None: absent, damaged, or saved without one)."""
    try:
        raw = (folder / name).read_bytes()
        expected = json.loads((folder / CHECKSUMS).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(expected, dict) or hashlib.sha256(raw).hexdigest() != expected.get(name):
        return None
    return raw.decode("utf-8", errors="replace")


def keep(ov, model, xml: Path, extra: dict[str, str] | None = None) -> None:
    """Save ``model`` at ``xml`` whole or not at all, with the sha256 of its files (and
    ``extra`` files: name -> text); a failure to keep it only costs the next run the work."""
    staging = xml.parent.parent / f".openvino-{os.getpid()}"
    try:
        ov.save_model(model, staging / "model.xml", compress_to_fp16=False)
        for name, text in (extra or {}).items():
            (staging / name).write_text(text)
        (staging / CHECKSUMS).write_text(json.dumps({name: sha256_file(staging / name)
                                                     for name in (*FILES, *(extra or {}))}))
        staging.rename(xml.parent)  # whole or absent; a concurrent twin may win
    except (OSError, RuntimeError) as exc:  # OpenVINO reports a failed write as RuntimeError
        if not xml.is_file():  # else a concurrent twin kept it first
            log.warning("could not keep the model in %s (%s); the next extraction makes it again",
                        xml.parent, first_line(exc))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
