"""Run stage 1 shards and stage 2 searches on a Dask cluster.

``--cluster ADDRESS`` connects to a running scheduler; ``--workers N`` starts
a local cluster of N single-threaded worker processes. Extraction plans once
here (every image fingerprinted once, for the view key), sends the plan to
each worker once, and submits one task per shard, each computing what the
feature store lacks of its images and writing its shard file into the cache
folder, which every worker must see at the same path (shared storage); the
client then merges them. Stage 2
runs each scikit-learn search through joblib's Dask backend, so the
candidates of a grid are fitted on the workers.

Dask is an optional extra: ``pip install -e ".[cluster]"``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

from ..config import ExtractConfig
from ..errors import ConfigError, first_line
from .extract import carry_out, plan
from .result import ExtractResult
from .shards import merge

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = "20s"


def connect(address: str | None = None, workers: int | None = None):
    """A ``distributed.Client``: to ``address``, or to a new local cluster of ``workers``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "`--cluster` and `--workers` run on Dask, which is not installed. Fix: "
            "pip install -e \".[cluster]\"") from None
    if address:
        try:
            return Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"Cannot reach the Dask scheduler at {address} ({first_line(exc)}). Fix: start "
                "it with `dask scheduler` (and workers with `dask worker ADDRESS`), or pass "
                "`--workers N` to start a cluster on this machine.") from None
    if workers is None or workers < 1:
        raise ConfigError(f"`--workers` must be 1 or more; got {workers}.")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster)


def close(client) -> None:
    """Close a client, and the local cluster when it started one."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _extract_shard(work, shard: tuple[int, int]):
    return carry_out(work.for_shard(shard), progress=False)


def extract_on_cluster(data: str | os.PathLike, config: ExtractConfig, client,
                       shards: int | None = None):
    """Stage 1 as Dask tasks, one per shard, then one merged cache file.

    Args:
        shards: how many shards (default: one per worker thread). A cache
            that already exists is returned as a hit without any task.

    Returns:
        The :class:`~pipeline.features.extract.ExtractResult` of the merged file.
    """
    started = time.perf_counter()
    # Workers resolve no relative path of their own: the data root is already absolute.
    work = plan(data, replace(config, cache_dir=str(config.cache_path.resolve())))
    found = work.hit()
    if found:
        return found
    count = shards or sum(client.nthreads().values())
    if count < 1:
        raise ConfigError(f"The Dask cluster at {client.scheduler.address} has no workers. "
                          "Fix: start workers with `dask worker ADDRESS`, or wait until they join.")
    log.info("extracting %d shards on %d Dask workers", count, len(client.nthreads()))
    shared = client.scatter(work, broadcast=True)  # the manifests travel once per worker
    futures = client.map(_extract_shard, [shared] * count,
                         [(i, count) for i in range(1, count + 1)], pure=False)
    parts = client.gather(futures)
    merged = merge([p.path for p in parts])
    first = parts[0]
    computed = sum(p.computed for p in parts)
    seconds = time.perf_counter() - started
    return ExtractResult(
        path=merged, hit=False, splits={s: sum(p.splits[s] for p in parts) for s in first.splits},
        classes=first.classes, feature_shape=first.feature_shape,
        quarantined=[q for p in parts for q in p.quarantined], seconds=seconds,
        images_per_second=computed / seconds if seconds and computed else 0.0,
        resumed_images=sum(p.resumed_images for p in parts), missing=first.missing,
        ignored=first.ignored, computed=computed,
        reused=sum(p.reused for p in parts), fingerprinted=work.fingerprinted)
