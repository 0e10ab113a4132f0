"""What checking a kept OpenVINO model costs: reading it by path (OpenVINO maps the weights
lazily, nothing checked) against reading its bytes and checking them against the checksums
saved with it, as the engine does, and the whole engine build with that check.

Usage (the real weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_kept_model.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import backbones  # noqa: E402
from pipeline.features import engines, kept  # noqa: E402


def measure(ov, label: str, spec, folder: Path) -> None:
    engines.OpenVINOEngine(spec, 0, 16, folder)  # converts and keeps it
    xml = engines.kept_model(folder)
    by_path, checked, builds = [], [], []
    for _ in range(5):
        started = time.perf_counter()
        ov.Core().read_model(xml)
        by_path.append(time.perf_counter() - started)
        started = time.perf_counter()
        kept.read(ov, xml)
        checked.append(time.perf_counter() - started)
    for _ in range(3):
        started = time.perf_counter()
        engines.OpenVINOEngine(spec, 0, 16, folder)
        builds.append(time.perf_counter() - started)
    size = (xml.parent / "model.bin").stat().st_size / 1e6
    print(f"{label}: model.bin {size:.0f} MB; read by path {statistics.median(by_path) * 1e3:.0f} ms, "
          f"read and checked {statistics.median(checked) * 1e3:.0f} ms; engine built from the kept "
          f"model {statistics.median(builds):.2f} s (medians)")


def main() -> None:
    import openvino as ov

    print(f"CPU: {cpu_line()}")
    for label, kwargs in (("MobileNet 0.25 @224, ImageNet weights", {}),
                          ("VGG16 @224, random weights", {"name": "vgg16", "weights": "none"})):
        with tempfile.TemporaryDirectory() as folder:  # the kept model goes with it
            measure(ov, label, backbones.resolve(**kwargs), Path(folder))


if __name__ == "__main__":
    main()
