"""Transfer learning on cached features.

Stage 1 runs a pretrained ``keras.applications`` backbone once over every
split and keeps the features in HDF5::

    from pipeline import ExtractConfig, extract_features
    result = extract_features("photos/", ExtractConfig(backbone="mobilenet", alpha=0.25))
    train = result.open().load("train")      # features, labels, paths

Stage 2 compares classifiers on those arrays and writes a run folder::

    from pipeline import CompareConfig, compare
    run = compare(result.path, CompareConfig(classifiers=("logreg", "dense")))
    print(run.markdown)
"""

from .backbones import BACKBONES, get_backbone, list_backbones
from .cache import FeatureCache
from .classifiers import CLASSIFIERS
from .compare import CompareResult, compare
from .config import CompareConfig, ExtractConfig
from .data import SplitConfig, discover
from .errors import PipelineError
from .extract import ExtractResult, extract_features

__all__ = [
    "BACKBONES",
    "CLASSIFIERS",
    "CompareConfig",
    "CompareResult",
    "ExtractConfig",
    "ExtractResult",
    "FeatureCache",
    "PipelineError",
    "SplitConfig",
    "compare",
    "discover",
    "extract_features",
    "get_backbone",
    "list_backbones",
]
__version__ = "0.1.0"
