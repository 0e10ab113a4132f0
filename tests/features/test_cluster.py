"""Stage 1 shards and stage 2 searches on a Dask LocalCluster started here."""

import sys

import h5py
import numpy as np
import pytest

from pipeline import CompareConfig, ExtractConfig, compare, extract_features
from pipeline.features import cluster as dask_cluster
from pipeline.cli import main
from pipeline.errors import ConfigError

from conftest import make_dataset

pytest.importorskip("distributed", reason="the cluster tests need the `cluster` extra")


@pytest.fixture(scope="module")
def client():
    client = dask_cluster.connect(workers=2)
    yield client
    dask_cluster.close(client)


def test_extraction_on_the_cluster_equals_the_local_one(client, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    config = ExtractConfig(weights="none", image_size=32, batch_size=4, chunk_size=4,
                           cache_dir=str(tmp_path / "cluster cache"))
    remote = dask_cluster.extract_on_cluster(data, config, client, shards=3)
    local = extract_features(data, ExtractConfig(**{**config.__dict__,
                                                    "cache_dir": str(tmp_path / "local")}))
    assert not remote.hit and remote.path.name == local.path.name
    assert remote.splits == local.splits == {"train": 20, "validation": 20}
    assert len(list(remote.path.parent.glob("*.shard-*-of-3.h5"))) == 3
    with h5py.File(remote.path, "r") as a, h5py.File(local.path, "r") as b:
        for split in ("train", "validation"):
            for name in ("features", "labels", "paths", "fingerprints"):
                np.testing.assert_array_equal(a[split][name][()], b[split][name][()])
    again = dask_cluster.extract_on_cluster(data, config, client)
    assert again.hit and again.path == remote.path


def test_a_cluster_comparison_gives_the_local_leaderboard(client, tmp_path, feature_cache):
    config = CompareConfig(classifiers=("logreg", "linear_svm", "knn"))
    local = compare(feature_cache, CompareConfig(**{**config.__dict__, "out": str(tmp_path / "l")}))
    remote = compare(feature_cache, CompareConfig(**{**config.__dict__, "out": str(tmp_path / "r")}),
                     cluster=client)

    def board(result):
        return [(r["classifier"], r["params"], r["validation"]["accuracy"], r["validation"]["log_loss"],
                 r["test"]["accuracy"]) for r in result.leaderboard]

    assert board(remote) == board(local)
    assert len(board(local)) == 3


def test_cluster_flag_messages(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConfigError) as err:
        dask_cluster.connect("tcp://127.0.0.1:1")
    assert str(err.value).startswith("Cannot reach the Dask scheduler at tcp://127.0.0.1:1 (")
    assert "Fix: start it with `dask scheduler`" in str(err.value)
    assert main(["extract", "--data", str(tmp_path), "--shard", "1/2", "--workers", "2"]) == 2
    assert "`--shard` extracts one shard here; `--cluster`/`--workers` extract every shard" in \
        capsys.readouterr().err
    assert main(["extract", "--data", str(tmp_path), "--shards", "4"]) == 2
    assert "`--shards` sets how many shards run on a Dask cluster. Fix: add `--cluster ADDRESS`" in \
        capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r'Dask, which is not installed. Fix: pip install -e "\.\[cluster\]"'):
        dask_cluster.connect(workers=1)
