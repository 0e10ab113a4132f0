"""Stage 1: a content-addressed feature store, and the views datasets read.

    spec.py     what shapes a row (the spec) and names a view (the key)
    hashing.py  content fingerprints, with a stat cache
    store.py    one folder of immutable segments per spec, rows keyed by content
    view.py     a dataset's view file (the HDF5 layout every later stage reads)
    extract.py  the backbone over what the store lacks, then the view
    shards.py   shard ownership and merging shard views
    cluster.py  shards as Dask tasks
    manage.py   ``cache ls`` and ``cache gc``
"""

from .extract import ExtractResult, extract_features
from .view import FeatureCache, SplitData, SplitManifest

__all__ = ["ExtractResult", "FeatureCache", "SplitData", "SplitManifest", "extract_features"]
