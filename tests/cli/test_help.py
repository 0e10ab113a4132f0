"""Every option of every command says what it does; a mistyped flag gets a hint."""

import argparse

import pytest

from pipeline.cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, path=()):
    """Every (command path, parser) under ``parser``, nested subcommands too."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    missing = [f"{' '.join(path) or 'run_pipeline.py'} {action.option_strings or action.dest}"
               for path, parser in _commands(build_parser()) for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help and action.help.strip())]
    assert missing == []
    assert len(list(_commands(build_parser()))) > 12  # the walk reached the subcommands


@pytest.mark.parametrize("argv, hint", [
    (["extract", "--data", "d", "--image_size", "96"], "did you mean --image-size?"),
    (["compare", "--featuers", "f.h5"], "did you mean --features?"),
    (["cache", "gc", "--dryrun"], "did you mean --dry-run?"),
    (["predict", "--run", "r", "--modle", "dense", "x.jpg"], "did you mean --model?"),
    (["run", "--batchsize", "8"], "did you mean --batch-size?"),
    (["extrct", "--data", "d"], "(did you mean extract?)"),
])
def test_a_mistyped_flag_or_command_gets_the_nearest_one(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert hint in capsys.readouterr().err


def test_a_commands_error_shows_that_commands_usage(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--batchsize", "8"])
    err = capsys.readouterr().err
    assert err.startswith("usage: run_pipeline.py run ") and "run_pipeline.py run: error:" in err


def test_run_s_batch_size_sets_both_stages(tmp_path, monkeypatch):
    from pipeline.cli import commands

    seen = {}

    class Resolved(Exception):
        """Raised by the stand-in once it has the resolved settings: no stage runs."""

    def stand_in(config, progress=None):
        seen["config"] = config
        raise Resolved

    monkeypatch.setattr("pipeline.workflow.run_pipeline", stand_in)
    with pytest.raises(Resolved):
        main(["run", "--data", str(tmp_path), "--batch-size", "8", "--finetune"])
    assert seen["config"].extract.batch_size == 8 and seen["config"].finetune.batch_size == 8
    assert "never replaced" in commands.CompareConfig.__dataclass_fields__["overwrite"].metadata["help"]


@pytest.mark.parametrize("n, expected", [(0, "0 pairs"), (1, "1 pair"), (2, "2 pairs")])
def test_counts_agree_with_their_nouns(n, expected):
    from pipeline.words import counted, leakage

    assert counted(n, "pair") == expected
    assert leakage({"cross_split_pairs": n}) == (
        "no near-duplicate pairs across splits" if n == 0 else
        f"{expected.replace('pair', 'near-duplicate pair')} {'crosses' if n == 1 else 'cross'} splits (leakage)")
    assert counted(n, "query", "queries").endswith("query" if n == 1 else "queries")


def test_the_hub_listing_keeps_its_columns_whatever_the_preset_names(capsys):
    pytest.importorskip("keras_hub", reason="the hub extra is not installed")
    assert main(["backbones", "hub:*"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("hub:")]
    assert len(lines) > 10
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(starts) == 1  # every family starts in the same column


def test_stage_1_s_precision_and_stage_3_s_mixed_precision_are_two_names(capsys):
    """`--precision` is how stage 1 computes features; stage 3's training compute has its own name."""
    for command, present, absent in (("extract", "--precision", "--mixed-precision"),
                                     ("finetune", "--mixed-precision", "--precision ")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert present in out and absent not in out
