"""The whole pipeline as one TOML file: :class:`RunConfig`, read and written back."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

from ..errors import ConfigError
from .fields import check_choices, documented, field_types, setting
from .stages import CompareConfig, ExtractConfig, FinetuneConfig

STAGES = ("extract", "compare", "finetune")
# Set by the `run` workflow itself (the run folder, the data it resolved), so
# a configuration file does not take them.
_SET_BY_RUN = {"compare": {"out", "overwrite"}, "finetune": {"data", "weights"}}


@documented
@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline: what ``run_pipeline.py run`` does, one TOML file.

    Top-level keys, then a table per stage holding the fields of
    :class:`ExtractConfig` (with ``[extract.split]``), :class:`CompareConfig`
    (with ``[compare.params.<classifier>]``) and :class:`FinetuneConfig`::

        data = "keras:cats_and_dogs_filtered"
        stages = ["extract", "compare", "finetune"]

        [extract]
        backbone = "mobilenet_v2"
        image_size = 160

        [compare.params.dense]
        units = 0
        learning_rate = 1e-4
    """

    data: str = setting("keras:cats_and_dogs_filtered",
                        help="an image folder; keras:<name> for a dataset Keras downloads into its "
                             "cache (cats_and_dogs_filtered, flower_photos); tfds:<name> for a "
                             "TensorFlow Datasets set (the tfds extra); demo for generated images")
    stages: tuple[str, ...] = setting(("extract", "compare"), choices=STAGES,
                                      help="which of extract, compare, finetune to run, in that order")
    name: str | None = setting(None, help="names the run folder runs/<name> (default: the "
                                          "configuration file's name, else the data's)")
    out: str | None = setting(None, help="the run folder, instead of runs/<name>")
    overwrite: bool = setting(False, help="replace a run folder made with other settings")
    extract: ExtractConfig = setting(factory=ExtractConfig, help="stage 1, the [extract] table")
    compare: CompareConfig = setting(factory=CompareConfig, help="stage 2, the [compare] table")
    finetune: FinetuneConfig = setting(factory=FinetuneConfig, help="stage 3, the [finetune] table")

    def __post_init__(self) -> None:
        check_choices(self)
        if list(self.stages) != [s for s in STAGES if s in self.stages] or "extract" not in self.stages:
            raise ConfigError(f"`stages` must start with extract and keep the order {', '.join(STAGES)}. "
                              f"Got {list(self.stages)}.")

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out).expanduser()
        name = self.name or Path(self.data.split(":")[-1].rstrip("/\\")).name or "run"
        return Path("runs") / name


def load_run_config(path: str | os.PathLike | None = None, overrides: list[str] = (),
                    base: dict | None = None) -> RunConfig:
    """Read a TOML configuration, apply ``section.key=value`` overrides, validate.

    Args:
        path: a TOML file (None: all defaults).
        overrides: ``"extract.image_size=96"``, ``"compare.params.dense.epochs=2"``;
            the value is read as TOML (``["logreg"]``, ``true``, ``1e-4``), or
            as a plain string when it is not TOML.
        base: settings applied under the file (``--demo``'s).

    Raises:
        ConfigError: an unreadable file, an unknown key, or a wrong type.
    """
    table = _merge({}, base or {})
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"`--config` must be a readable TOML file. Got {str(path)!r}: "
                              f"{exc.strerror or exc}.") from None
        try:
            table = _merge(table, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file.") from None
        table.setdefault("name", path.stem)
    for text in overrides:
        dotted, sep, raw = text.partition("=")
        if not (sep and dotted.strip()):
            raise ConfigError(f"`--set` must look like SECTION.KEY=VALUE (e.g. extract.image_size=96). "
                              f"Got {text!r}.")
        *parents, key = dotted.strip().split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"`--set {dotted}`: {part!r} is a value, not a table.")
        node[key] = _toml_value(raw.strip())
    return _build(RunConfig, table, where=str(path) if path else "the settings")


def run_config_toml(config: RunConfig) -> str:
    """The configuration as TOML that :func:`load_run_config` reads back."""
    import tomli_w

    table = _table(config)
    for section, names in _SET_BY_RUN.items():
        for name in names:
            table.get(section, {}).pop(name, None)
    table.pop("overwrite", None)
    params = table.get("compare", {}).get("params", {})
    for values in params.values():  # one value reads better as a scalar
        for name, v in values.items():
            values[name] = v[0] if len(v) == 1 else v
    return tomli_w.dumps(table)


def _table(obj) -> dict:
    """A dataclass as a TOML table: None left out (it is every such field's default)."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            value = _table(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
        if value is not None:
            out[f.name] = value
    return out


def _merge(into: dict, new: dict) -> dict:
    out = dict(into)
    for key, value in new.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _toml_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _params(table: dict, where: str) -> dict:
    """``[compare.params.<classifier>]`` tables; one value fixes, a list is searched."""
    for clf, params in table.items():
        if not isinstance(params, dict):
            raise ConfigError(f"`compare.params.{clf}` must be a table of parameters in {where} "
                              f"(e.g. [compare.params.{clf}] then C = [0.01, 0.1]). Got {params!r}.")
    return {clf: {k: v if isinstance(v, list) else [v] for k, v in params.items()}
            for clf, params in table.items()}


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}


def _build(cls, table: dict, where: str, prefix: str = ""):
    """``cls`` from a TOML table, every key and type checked."""
    known = {f.name: f for f in fields(cls)}
    taken = _SET_BY_RUN.get(prefix.rstrip("."), set())
    for key in table:
        if key not in known or key in taken:
            choices = sorted(set(known) - taken)
            near = difflib.get_close_matches(key, choices, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"Unknown setting `{prefix}{key}` in {where}.{hint} "
                              f"[{prefix.rstrip('.') or 'top level'}] takes: {', '.join(choices)}.")
    kwargs = {}
    types = field_types(cls)
    for key, value in table.items():
        kind = str(known[key].type)
        name = f"{prefix}{key}"
        nested = types[key] if is_dataclass(types[key]) else None
        if nested is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"`{name}` must be a table ([{name}]) in {where}. Got {value!r}.")
            kwargs[key] = _build(nested, value, where, f"{name}.")
            continue
        if kind.startswith("tuple"):
            value = [value] if isinstance(value, str) else value
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"`{name}` must be a list of names in {where}. Got {value!r}.")
            value = tuple(value)
        else:
            parts = [p.strip() for p in kind.split("|")]
            allowed = tuple(t for part in parts for t in _TYPES.get(part, ()))
            if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in parts):
                raise ConfigError(f"`{name}` must be {' or '.join(p for p in parts if p != 'None')} "
                                  f"in {where}. Got {value!r}.")
            if "float" in parts and "int" not in parts:
                value = float(value)
        if name == "compare.params":
            value = _params(value, where)
        kwargs[key] = value
    return cls(**kwargs)
