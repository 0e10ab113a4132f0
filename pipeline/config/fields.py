"""One description per setting, in its field: the CLI, the TOML reader and the docs read it.

A setting is a dataclass field made with :func:`setting`, which keeps its
help text (and, where needed, its choices, flag name and how a flag's text
becomes a value) in the field's metadata. :func:`documented` writes the
class's ``Args:`` section from the same texts, so ``help(ExtractConfig)``
and ``run_pipeline.py extract -h`` cannot drift apart.
"""

from __future__ import annotations

import difflib
import textwrap
import typing
from dataclasses import MISSING, Field, field, fields, is_dataclass
from types import UnionType

from ..errors import ConfigError


def setting(default=MISSING, *, help: str, factory=MISSING, choices: tuple | None = None,  # noqa: A002
            flag: str | None = None, metavar: str | None = None, parse=None, collect=None) -> Field:
    """A dataclass field with its help text.

    Args:
        help: one sentence or two; the flag's help and the docstring's entry.
        choices: the values it takes (each item, for a tuple); :func:`check_choices` checks them.
        flag: the flag's name without dashes, when not the field's name.
        parse: turns one flag's text into a value, for a repeatable flag
            (with ``collect``, which turns the list of them into the field's value).
    """
    meta = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "parse": parse,
            "collect": collect}
    return field(default=default, default_factory=factory,
                 metadata={k: v for k, v in meta.items() if v is not None})


def check_choices(config) -> None:
    """Every field that has ``choices``: its value (each item, for a tuple) is one of them.

    Raises:
        ConfigError: naming the flag, the valid values, the value given and the closest one.
    """
    for f in fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                close = difflib.get_close_matches(str(item), [str(c) for c in choices], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                flag = f.metadata.get("flag", f.name.replace("_", "-"))
                raise ConfigError(f"`--{flag}` must be one of {', '.join(map(str, choices))}. "
                                  f"Got {item!r}.{hint}")


def documented(cls):
    """Append an ``Args:`` section, from each field's help, to the class docstring."""
    entries = []
    for f in fields(cls):
        text = f.metadata.get("help", "")
        entries.append(textwrap.fill(f"{f.name}: {text}", width=88, initial_indent="        ",
                                     subsequent_indent="            ", break_on_hyphens=False,
                                     break_long_words=False))
    cls.__doc__ = (cls.__doc__ or cls.__name__).rstrip() + "\n\n    Args:\n" + "\n".join(entries) + "\n"
    return cls


def field_types(cls) -> dict[str, object]:
    """Each field's type, resolved (the annotations are strings)."""
    return typing.get_type_hints(cls)


def base_type(kind) -> type:
    """``int | None`` -> int; ``str | int | None`` -> str (a flag's text is kept as it is)."""
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        parts = [k for k in typing.get_args(kind) if k is not type(None)]
        return str if len(parts) > 1 else base_type(parts[0])
    return typing.get_origin(kind) or kind


def nested(cls) -> dict[str, type]:
    """The fields of ``cls`` that are settings classes themselves."""
    return {name: kind for name, kind in field_types(cls).items() if is_dataclass(kind)}


def parse_param(text: str) -> tuple[str, str, list]:
    """``"logreg.C=0.01,0.1"`` -> ``("logreg", "C", [0.01, 0.1])``."""
    head, sep, values = text.partition("=")
    name, dot, param = head.partition(".")
    if not (sep and dot and name and param and values):
        raise ConfigError(
            f"`--param` must look like CLASSIFIER.NAME=VALUE[,VALUE...] "
            f"(e.g. logreg.C=0.01,0.1). Got {text!r}."
        )
    return name.strip(), param.strip(), [_value(v.strip()) for v in values.split(",")]


def collect_params(parsed: list[tuple[str, str, list]]) -> dict[str, dict[str, list]]:
    """Several ``--param`` flags -> ``{classifier: {parameter: values}}``."""
    params: dict[str, dict[str, list]] = {}
    for name, param, values in parsed:
        params.setdefault(name, {})[param] = values
    return params


def _value(text: str):
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
