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

Stage 3 fine-tunes end to end from that run's dense head, and any model of
the run classifies new images::

    from pipeline import FinetuneConfig, finetune, predict
    finetune(run.run_dir, FinetuneConfig(unfreeze_top=20, epochs=10))
    predict(run.run_dir, ["new_photos/"], model="finetuned").to_csv()
"""

from .backbones import BACKBONES, get_backbone, list_backbones
from .compare import CompareResult, compare
from .config import CompareConfig, ExtractConfig, FinetuneConfig, SplitConfig
from .data import discover
from .errors import PipelineError
from .features import ExtractResult, FeatureCache, extract_features
from .finetune import FinetuneResult, finetune
from .predict import predict

__all__ = [
    "BACKBONES",
    "CLASSIFIERS",
    "CompareConfig",
    "CompareResult",
    "ExtractConfig",
    "ExtractResult",
    "FinetuneConfig",
    "FinetuneResult",
    "FeatureCache",
    "PipelineError",
    "SplitConfig",
    "compare",
    "discover",
    "extract_features",
    "finetune",
    "get_backbone",
    "list_backbones",
    "predict",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The classifier registry builds scikit-learn estimators, and importing
    # scikit-learn takes a second that stage-1 commands should not pay.
    if name == "CLASSIFIERS":
        from .heads.registry import CLASSIFIERS

        return CLASSIFIERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
