"""Extraction over several devices (MirroredStrategy), emulated with two logical CPUs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {root!r})
    from pipeline import ExtractConfig, backbones, extract_features

    def extract(folder, strategy):
        backbones.gpu_strategy = lambda: strategy
        config = ExtractConfig(backbone="vgg16", weights="none", image_size=32, batch_size=5,
                               chunk_size=10, cache_dir=folder)
        result = extract_features({data!r}, config, progress=False)
        cache = result.open()
        return {{s: cache.load(s) for s in cache.splits}}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ours = extract({tmp!r} + "/two", mirrored)
    theirs = extract({tmp!r} + "/one", None)
    print(json.dumps({{
        "replicas": mirrored.num_replicas_in_sync,
        "rows": {{s: len(d.labels) for s, d in ours.items()}},
        "same_paths": all(ours[s].paths == theirs[s].paths for s in ours),
        "max_difference": max(float(np.abs(ours[s].features - theirs[s].features).max()) for s in ours),
        "scale": max(float(np.abs(theirs[s].features).max()) for s in ours),
    }}))
""")


def test_two_replicas_extract_the_same_features_as_one(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=7)  # 14 a split: batches of 5 split 3 + 2
    code = SCRIPT.format(root=str(ROOT), data=str(data), tmp=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["rows"] == {"train": 14, "validation": 14} and result["same_paths"]
    assert result["scale"] > 1e-3  # VGG16's random-weight features are not vanishingly small
    assert result["max_difference"] <= 1e-4 * result["scale"]
