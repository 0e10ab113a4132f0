"""Command line: ``python run_pipeline.py <command> ...``.

User errors (:class:`PipelineError`) print one message and exit with status 2,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from ..console import native_logs_filtered
from ..errors import PipelineError, on_the_command_line
from . import commands


class _Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a flag it does not know."""

    given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = _flags(self, parsed)
            # The usage shown is the command's own, not the top-level one.
            _chosen(self, parsed).error(f"unrecognized arguments: {' '.join(unknown)}{_hints(unknown, flags)}")
        return parsed

    def error(self, message):
        if "unrecognized arguments" not in message:  # e.g. a required flag missing, misspelt
            message += _hints(self.given, _flags(self, None)) + _command_hint(message, self)
        super().error(message)


def _chosen(parser: argparse.ArgumentParser, parsed) -> argparse.ArgumentParser:
    """The subcommand's parser that ``parsed`` chose (the parser itself when none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(getattr(parsed, action.dest, None) or "", parser)
    return parser


def _command_hint(message: str, parser: argparse.ArgumentParser) -> str:
    """" (did you mean extract?)" for a misspelt command."""
    import re

    found = re.search(r"invalid choice: '([^']*)'", message)
    commands = [c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices]
    near = difflib.get_close_matches(found.group(1), commands, n=1, cutoff=0.6) if found else []
    return f" (did you mean {near[0]}?)" if near else ""


def _flags(parser: argparse.ArgumentParser, parsed) -> list[str]:
    """The flags of ``parser`` and of the subcommands ``parsed`` chose under it."""
    flags: list[str] = []
    while parser is not None:
        flags += [o for a in parser._actions for o in a.option_strings]
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and parsed is not None:
                chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
        parser = chosen
    return flags


def _hints(tokens: list[str], flags: list[str]) -> str:
    """" (did you mean --x?)" for each unknown flag among ``tokens`` that is near a known one."""
    hints = []
    for token in tokens:
        name = token.split("=")[0]
        if token.startswith("-") and name not in flags:
            near = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.6)
            hints += [f" (did you mean {near[0]}?)"] if near else []
    return "".join(hints)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_pipeline.py",
        description="Transfer learning on cached features: extract once, compare classifiers in seconds.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in commands.COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ chatter out
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv if argv else ["run"])  # no arguments: the main job
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # TensorFlow's own Python-side info lines
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    with native_logs_filtered(), on_the_command_line():  # the filter is off under -v
        try:
            code = commands.COMMANDS[args.command][1](args)
            sys.stdout.flush()  # here, where a reader that went away is caught below
            return code
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # Every stage keeps what it finished (the store's chunks, a run's earlier folder).
            print("interrupted; run the same command again to resume", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # The reader went away (`inspect V | head -3`): stop quietly, as a shell tool does,
            # with stdout pointed at nothing so that its flush at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
