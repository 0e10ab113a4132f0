"""Run configuration: TOML files, overrides, and every message they can give."""

from pathlib import Path

import pytest

from pipeline.backbones import get_backbone
from pipeline.heads.registry import get_classifier
from pipeline.config import RunConfig, load_run_config, run_config_toml
from pipeline.errors import ConfigError

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))


def test_recipes_are_found():
    assert {p.stem for p in RECIPES} >= {"tf_tutorial", "dlwp_vgg16", "nasnet_large_tfds",
                                         "inception_v3", "keras_blog_vgg16"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_validates_and_round_trips(recipe, tmp_path):
    config = load_run_config(recipe)
    assert config.run_dir == Path("runs") / recipe.stem
    get_backbone(config.extract.backbone)
    for name in config.compare.classifiers:
        get_classifier(name)
    saved = tmp_path / "run.toml"
    saved.write_text(run_config_toml(config))
    assert load_run_config(saved) == config


def test_tf_tutorial_recipe_keeps_the_tutorial_choices():
    c = load_run_config(RECIPES[[p.stem for p in RECIPES].index("tf_tutorial")])
    assert (c.extract.backbone, c.extract.image_size, c.extract.pooling) == ("mobilenet_v2", 160, "avg")
    assert c.extract.split.test_from_validation == 0.2
    assert c.compare.params["dense"]["units"] == [0] and c.compare.params["dense"]["dropout"] == [0.2]
    assert c.compare.params["dense"]["learning_rate"] == [1e-4]
    assert (c.finetune.unfreeze_from, c.finetune.optimizer, c.finetune.learning_rate) == (100, "rmsprop", 1e-5)


def test_defaults_are_the_main_job():
    config = load_run_config()
    assert config == RunConfig()
    assert config.data == "keras:cats_and_dogs_filtered" and config.stages == ("extract", "compare")
    assert config.run_dir == Path("runs/cats_and_dogs_filtered")


def test_overrides_are_read_as_toml_and_win_over_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('data = "photos"\n[extract]\nimage_size = 160\n[compare.params.logreg]\nC = [0.1, 1.0]\n')
    config = load_run_config(path, ["extract.image_size=96", "compare.classifiers=[\"logreg\"]",
                                    "compare.params.logreg.C=0.5", "finetune.unfreeze_from=block5_conv1",
                                    "finetune.learning_rate=1e-5", "extract.split.test_fraction=0.2"])
    assert config.extract.image_size == 96 and config.compare.classifiers == ("logreg",)
    assert config.compare.params == {"logreg": {"C": [0.5]}}
    assert config.finetune.unfreeze_from == "block5_conv1" and config.finetune.learning_rate == 1e-5
    assert config.extract.split.test_fraction == 0.2
    assert config.run_dir == Path("runs/mine")  # named after the file
    assert isinstance(load_run_config(overrides=["finetune.learning_rate=1"]).finetune.learning_rate, float)


@pytest.mark.parametrize("overrides, message", [
    (["extract.image_sise=96"], "Unknown setting `extract.image_sise` in the settings. Did you mean 'image_size'?"),
    (["extract.image_size=big"], "`extract.image_size` must be int in the settings. Got 'big'."),
    (["stages=[\"compare\"]"], "`stages` must start with extract"),
    (["stages=[\"extract\", \"train\"]"], "`stages` must be one of extract, compare, finetune. Got 'train'."),
    (["compare.out=elsewhere"], "Unknown setting `compare.out`"),
    (["finetune.train_bn=1"], "`finetune.train_bn` must be bool in the settings. Got 1."),
    (["compare.params.logreg=1"], "`compare.params.logreg` must be a table of parameters"),
    (["extract=1"], "`extract` must be a table ([extract])"),
    (["image_size"], "`overrides` must look like SECTION.KEY=VALUE"),
    (["finetune.momentum=1.5"], "`momentum` must be in [0, 1). Got 1.5."),
])
def test_bad_settings_say_what_and_how_to_fix(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_run_config(overrides=overrides)
    assert message in str(info.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="`path` must be a readable TOML file"):
        load_run_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[extract\nbackbone = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .* Fix the file."):
        load_run_config(bad)


def test_a_message_names_the_argument_in_python_and_the_flag_on_the_command_line(capsys):
    from pipeline.cli import main
    from pipeline.config import PredictConfig

    with pytest.raises(ConfigError) as caught:
        PredictConfig(batch_size=0)
    assert str(caught.value) == "`batch_size` must be a positive integer. Got 0."
    assert main(["predict", "--run", "nowhere", "x.jpg", "--batch-size", "0"]) == 2
    assert "error: `--batch-size` must be a positive integer. Got 0." in capsys.readouterr().err


def test_every_flag_that_is_not_its_argument_s_name_is_translated():
    import dataclasses

    from pipeline import config
    from pipeline.errors import ARGUMENT_OF_FLAG

    renamed = {}
    for name in dir(config):
        cls = getattr(config, name)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            renamed.update({f.metadata["flag"]: f.name for f in dataclasses.fields(cls)
                            if "flag" in f.metadata and f.metadata["flag"].replace("-", "_") != f.name})
    run_flags = {"config": "path", "set": "overrides"}  # `run`'s: load_run_config(path, overrides)
    assert renamed == {k: v for k, v in ARGUMENT_OF_FLAG.items() if k not in run_flags}
    assert {k: ARGUMENT_OF_FLAG[k] for k in run_flags} == run_flags
