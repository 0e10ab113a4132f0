"""Stage 1: a content-addressed feature store, and the views datasets read.

    spec.py     what shapes a row (the spec) and names a view (the key)
    hashing.py  content fingerprints, with a stat cache
    store.py    one folder of immutable segments per spec, rows keyed by content
    view.py     a dataset's view file (the HDF5 layout every later stage reads)
    extract.py  plan what the store lacks, compute it, then write the view
    compute.py  the backbone over the images to compute, one store segment per chunk
    result.py   what an extraction reports
    shards.py   shard ownership and merging shard views
    cluster.py  shards as Dask tasks
    manage.py   ``cache ls`` and ``cache gc``
"""

from .extract import extract_features
from .result import ExtractResult
from .view import FeatureCache, SplitData, SplitManifest

__all__ = ["ExtractResult", "FeatureCache", "SplitData", "SplitManifest", "extract_features"]
