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

    from pipeline import FinetuneConfig, PredictConfig, finetune, predict
    finetune(run.run_dir, FinetuneConfig(unfreeze_top=20, epochs=10))
    predict(run.run_dir, ["new_photos/"], PredictConfig(model="finetuned")).to_csv()

The labelling loop replays strategies on the labelled features, then ranks new
photos to label and tests whether a new batch is like the training images::

    from pipeline import drift, replay, suggest
    print(replay(result.path).markdown())          # which strategy saves labels here
    suggest(run.run_dir, "unlabelled/").suggestions
    drift(run.run_dir, "this_week/").p_value
"""

import importlib
import sys
import types

# Every name is imported on first use: a command that reads a cache (or prints
# --help) must not pay for TensorFlow, OpenVINO or scikit-learn.
_WHERE = {
    "BACKBONES": ".backbones", "get_backbone": ".backbones", "list_backbones": ".backbones",
    "CompareResult": ".compare",
    "CompareConfig": ".config", "ExportConfig": ".config", "ExtractConfig": ".config",
    "FinetuneConfig": ".config", "PredictConfig": ".config", "SplitConfig": ".config",
    "discover": ".data",
    "PipelineError": ".errors",
    "ExtractResult": ".features", "FeatureCache": ".features", "extract_features": ".features",
    "FinetuneResult": ".finetune",
    "CLASSIFIERS": ".heads.registry",
    "DriftConfig": ".config", "ReplayConfig": ".config", "SuggestConfig": ".config",
    "replay": ".loop.replay", "ReplayResult": ".loop.replay", "suggest": ".loop.suggest",
    "SuggestResult": ".loop.suggest", "drift": ".loop.drift", "DriftResult": ".loop.drift",
    "STRATEGIES": ".loop.strategies",
}
# Functions named like their own modules: the package's attribute is the
# function, even after the import system records the submodule under that name.
_SAME_NAME = ("compare", "finetune", "predict")
__all__ = sorted([*_WHERE, *_SAME_NAME])
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    pass


def _function_of(name: str) -> property:
    def get(package):
        return getattr(importlib.import_module(f".{name}", package.__name__), name)

    def keep(package, submodule):  # the import system sets the submodule here; the function stays
        pass

    return property(get, keep)


for _name in _SAME_NAME:
    setattr(_Package, _name, _function_of(_name))
sys.modules[__name__].__class__ = _Package
