"""Stage 2 out of core: features far larger than the memory budget, streamed from HDF5.

1. Write a synthetic feature cache (default 2 M rows x 1280 float16, 5.1 GB:
   80 % train, 10 % validation, 10 % test; 10 classes, each a Gaussian cloud).
2. In its own process each (so each peak is its own), run ``compare`` with a
   memory budget (default 1024 MB) on:
   - ``logreg``: SGD ``partial_fit`` (one C, ``--sgd-epochs`` passes);
   - ``dense``: the Keras head from ``tf.data`` batches (``--dense-epochs``);
   and a process that only imports what those import (the baseline).
3. Print, per path: fit and predict seconds, rows/s, validation accuracy, and
   the peak resident memory (VmHWM) against the budget.

Usage:

    python benchmarks/bench_outofcore.py [--rows 2000000] [--dim 1280] [--budget-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.features import checked  # noqa: E402
from pipeline.features.view import base_attrs  # noqa: E402
from pipeline.heads.outofcore import in_memory_bytes  # noqa: E402

HERE = str(Path(__file__).resolve().parent)  # for _peak, in the children
RUN = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path[:0] = [{root!r}, {here!r}]
from _peak import peak_mb
from pipeline import CompareConfig, compare
from pipeline.heads import outofcore
outofcore.SGD_EPOCHS = {sgd_epochs}
result = compare({path!r}, CompareConfig(classifiers=({name!r},), params={params!r},
                                        memory_budget_mb={budget}, out={out!r}, overwrite=True))
print(json.dumps({{"row": result.leaderboard[0], "seconds": result.seconds, "peak_mb": peak_mb()}}))
"""
BASELINE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path[:0] = [{root!r}, {here!r}]
from _peak import peak_mb
import h5py, keras, sklearn.linear_model, tensorflow
from pipeline import compare
from pipeline.heads import dense, outofcore
print(peak_mb())
"""


def write_cache(path: Path, rows: int, dim: int, dtype: str, classes: int = 10) -> None:
    """A cache file in the stage-1 layout, checksummed as extraction writes it, block by block."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (classes, dim)).astype("float32")
    sizes = {"train": rows * 8 // 10, "validation": rows // 10}
    sizes["test"] = rows - sum(sizes.values())
    key = {"format_version": 1, "backbone": "synthetic", "alpha": None, "weights": "none",
           "image_size": 0, "pooling": "avg", "preprocessing": "none", "decode": "full",
           "dtype": dtype, "classes": [f"c{i}" for i in range(classes)], "rows": rows, "dim": dim}
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w", libver=checked.LIBVER) as h5:
        for split, n in sizes.items():
            group = h5.create_group(split)
            features = checked.create(group, "features", shape=(n, dim), dtype=dtype)
            labels = rng.integers(0, classes, n).astype("int32")
            for start in range(0, n, 65536):
                y = labels[start:start + 65536]
                noise = rng.standard_normal((len(y), dim), dtype="float32") * 10.0
                features[start:start + len(y)] = (centres[y] + noise).astype(dtype)
            checked.create(group, "labels", labels)
            names = np.char.add(f"{split}/img", np.arange(n).astype(str)).astype(object)
            checked.create(group, "paths", names, dtype=text)
            checked.create(group, "fingerprints", names, dtype=text)
            checked.create(group, "quarantine/paths", [], dtype=text)
            checked.create(group, "quarantine/reasons", [], dtype=text)
        for name, value in base_attrs(key, key["classes"], path.parent, {}).items():
            h5.attrs[name] = value
        checked.seal(h5)  # the view refuses a file without checksums


def run(code: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr)
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--budget-mb", type=float, default=1024)
    parser.add_argument("--sgd-epochs", type=int, default=1)
    parser.add_argument("--dense-epochs", type=int, default=1)
    parser.add_argument("--dense-batch", type=int, default=512)
    parser.add_argument("--paths", default="logreg,dense", help="which paths to run")
    parser.add_argument("--work", type=Path, help="folder for the file (kept; reused when present)")
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)

    work = args.work or Path(tempfile.mkdtemp(prefix="ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"synthetic-{args.rows}x{args.dim}-{args.dtype}.h5"
    if not path.exists():
        start = time.perf_counter()
        write_cache(path, args.rows, args.dim, args.dtype)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    train = args.rows * 8 // 10
    need = in_memory_bytes({"train": train, "validation": args.rows // 10}, (args.dim,)) / 2**20
    print(f"{args.rows} rows x {args.dim} {args.dtype}; in memory, train + validation would need "
          f"{need:.0f} MB; budget {args.budget_mb:.0f} MB")
    baseline = int(run(BASELINE.format(root=str(ROOT), here=HERE)))
    print(f"imports alone (TensorFlow, Keras, scikit-learn, h5py): peak {baseline} MB")
    # Passes over train: logreg fits its scaler first; the head validates every epoch.
    for name, params, passes in (
            ("logreg", {"logreg": {"C": [0.1]}}, args.sgd_epochs + 1),
            ("dense", {"dense": {"epochs": [args.dense_epochs], "batch_size": [args.dense_batch]}},
             args.dense_epochs * 1.125)):
        if name not in args.paths.split(","):
            continue
        out = run(RUN.format(root=str(ROOT), sgd_epochs=args.sgd_epochs, path=str(path), name=name,
                             params=params, budget=args.budget_mb, out=str(work / f"run-{name}"),
                             here=HERE))
        result = json.loads(out)
        row = result["row"]
        print(f"{name:<7} {row['path']}: fit {row['fit_seconds']:.0f} s "
              f"({train * passes / row['fit_seconds']:,.0f} rows/s read and trained); predict "
              f"{args.rows // 10 / row['predict_seconds']:,.0f} rows/s; validation accuracy "
              f"{row['validation']['accuracy']:.4f}; peak memory {result['peak_mb']} MB "
              f"({'under' if result['peak_mb'] < args.budget_mb else 'OVER'} the budget)")


if __name__ == "__main__":
    main()
