"""Command-line options made from the settings dataclasses, and settings made from options.

Each field of a settings class (see :mod:`pipeline.config.fields`) becomes
one flag: ``--image-size`` for ``image_size``, with the field's help, its
choices, and its default said in the help. A nested class (``split``) adds
its own fields' flags. Flags a user does not give are left out, so the
dataclass's own defaults apply and nothing is typed twice.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import MISSING, fields, is_dataclass

from ..config.fields import base_type, field_types


def flag(f) -> str:
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def help_text(f) -> str:
    """A field's help, with its default when it has one worth saying."""
    default = _default(f)
    if default is None or isinstance(default, bool) or default == {}:
        return f.metadata["help"]
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{f.metadata['help']} (default: {shown})"


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def add_settings(parser: argparse.ArgumentParser, cls, *, only: tuple[str, ...] | None = None,
                 prefix: str = "") -> None:
    """One flag per field of ``cls`` (and of its nested settings classes).

    Args:
        only: these fields alone.
        prefix: prepended to each ``dest`` (``"extract."``), for commands that
            turn flags into overrides of a whole-pipeline configuration.
    """
    types = field_types(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        kind = types[f.name]
        if is_dataclass(kind):
            add_settings(parser, kind, prefix=f"{prefix}{f.name}.")
            continue
        options = {"dest": prefix + f.name, "default": argparse.SUPPRESS, "help": help_text(f)}
        base = base_type(kind)
        if "parse" in f.metadata:
            options.update(action="append", type=f.metadata["parse"])
        elif base is bool:
            options["action"] = "store_true"
        elif base is tuple:
            options["type"] = _names
        else:
            options["type"] = base
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata or not (base is bool or "choices" in options):
            options["metavar"] = f.metadata.get("metavar", f.name.upper())
        parser.add_argument(flag(f), **options)


def settings_from(args: argparse.Namespace, cls, prefix: str = ""):
    """``cls`` from the flags given; fields not given keep the dataclass's default."""
    given = vars(args)
    types = field_types(cls)
    values = {}
    for f in fields(cls):
        dest = prefix + f.name
        if is_dataclass(types[f.name]):
            values[f.name] = settings_from(args, types[f.name], f"{dest}.")
        elif dest in given:
            value = given[dest]
            values[f.name] = f.metadata["collect"](value) if "collect" in f.metadata else value
    return cls(**values)


# The dest prefix of flags that override a whole-pipeline configuration (`run`).
OVERRIDE = "set:"


def overrides_from(args: argparse.Namespace) -> list[str]:
    """Flags added with ``prefix=OVERRIDE + ...``, as ``key=value`` overrides (JSON values, which
    TOML reads)."""
    return [f"{dest[len(OVERRIDE):]}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
            for dest, v in vars(args).items() if dest.startswith(OVERRIDE)]


def add_cluster(p, what: str) -> None:
    """``--cluster ADDRESS`` or ``--workers N``: where a command runs its Dask work."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--cluster", metavar="ADDRESS", help=f"a Dask scheduler ({what})")
    group.add_argument("--workers", type=int, help=f"start a local Dask cluster of N processes ({what})")


def wants_cluster(args) -> bool:
    return bool(args.cluster) or args.workers is not None


@contextmanager
def cluster(args):
    """The Dask client the flags ask for, or None."""
    if not wants_cluster(args):
        yield None
        return
    from ..features.cluster import close, connect

    client = connect(args.cluster, args.workers)
    try:
        yield client
    finally:
        close(client)
