"""Every setting has one flag, with the field's own help; flags become settings exactly."""

import argparse
from dataclasses import fields, is_dataclass

import pytest

from pipeline.cli import build_parser
from pipeline.cli.options import flag, help_text, overrides_from, settings_from
from pipeline.config import (CompareConfig, ExtractConfig, FinetuneConfig, RunConfig, SplitConfig,
                             load_run_config)
from pipeline.config.fields import field_types
from pipeline.errors import ConfigError

COMMAND_OF = {SplitConfig: "extract", ExtractConfig: "extract", CompareConfig: "compare",
              FinetuneConfig: "finetune", RunConfig: "run"}


def _options(command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices[command]._actions for s in a.option_strings}


@pytest.mark.parametrize("cls", list(COMMAND_OF), ids=lambda c: c.__name__)
def test_every_field_has_a_flag_whose_help_is_the_fields(cls):
    options = _options(COMMAND_OF[cls])
    types = field_types(cls)
    for f in fields(cls):
        if is_dataclass(types[f.name]):  # a table: its own fields have the flags
            continue
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        assert flag(f) in options, f"{cls.__name__}.{f.name} has no {flag(f)}"
        assert options[flag(f)].help == help_text(f)
        assert f.metadata["help"] in " ".join(cls.__doc__.split()), "the docstring says the same"


def test_flags_given_become_settings_and_the_rest_keep_their_defaults():
    parser = build_parser()
    args = parser.parse_args(["extract", "--data", "d", "--image-size", "96", "--orientation", "ignore",
                              "--validation-fraction", "0.2"])
    assert settings_from(args, ExtractConfig) == ExtractConfig(image_size=96, orientation="ignore",
                                                               split=SplitConfig(validation_fraction=0.2))
    args = parser.parse_args(["compare", "--features", "f.h5", "--classifiers", "logreg,knn",
                              "--param", "logreg.C=0.1,1", "--param", "knn.n_neighbors=3",
                              "--jobs", "2", "--memory-budget", "512"])
    assert settings_from(args, CompareConfig) == CompareConfig(
        classifiers=("logreg", "knn"), params={"logreg": {"C": [0.1, 1]}, "knn": {"n_neighbors": [3]}},
        n_jobs=2, memory_budget_mb=512.0)
    args = parser.parse_args(["finetune", "--run", "r", "--handoff-samples", "8", "--train-bn"])
    assert settings_from(args, FinetuneConfig) == FinetuneConfig(handoff_samples=8, train_bn=True)


def test_run_flags_become_overrides_of_the_configuration():
    args = build_parser().parse_args(["run", "--data", "demo", "--stages", "extract,compare",
                                      "--backbone", "vgg16", "--overwrite"])
    config = load_run_config(None, overrides_from(args))
    assert config.data == "demo" and config.overwrite and config.extract.backbone == "vgg16"
    assert config.stages == ("extract", "compare")


def test_a_bad_value_is_the_settings_own_message():
    args = build_parser().parse_args(["extract", "--data", "d", "--chunk-size", "8", "--batch-size", "16"])
    with pytest.raises(ConfigError, match=r"`chunk_size` must be at least `batch_size` \(16\)"):
        settings_from(args, ExtractConfig)
