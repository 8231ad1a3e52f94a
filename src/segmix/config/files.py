"""YAML configs validated by pydantic, with ``key.sub=value`` overrides from the command line."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from segmix.data.text import read_yaml, yaml_problem
from segmix.errors import ConfigError, validation_problems
from segmix.runtime import usable_cores

M = TypeVar("M", bound=BaseModel)
__all__ = ["ConfigError", "apply_overrides", "config_hash", "load_config", "save_config", "validation_problems"]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ``["stage1.epochs=5", "seed=3"]`` (values parsed as YAML)."""
    out = json.loads(json.dumps(raw, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: not of the form key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):
            raise ConfigError(f"--set {item}: no key {'before =' if not key.strip() else 'part between dots'}")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({yaml_problem(err)})") from err
    return out


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Read ``path`` (or defaults), apply overrides, validate.

    Errors name where the bad value came from: ``--set KEY=VALUE`` for an override, else the
    file (or ``defaults``), and the key.
    """
    raw: dict = {}
    where = str(path) if path else "defaults"
    if path:
        try:
            raw = read_yaml(Path(path).read_text()) or {}
        except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8 text
            raise ConfigError(f"{where}: cannot read config ({yaml_problem(err)})") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: config must be a mapping of keys to values")
    overrides = list(overrides or [])
    raw = apply_overrides(raw, overrides)
    try:
        cfg = model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("; ".join(validation_problems(err, model, _blame(overrides, where)))) from err
    check_threads(cfg, _blame(overrides, where))
    return cfg


def check_threads(cfg: BaseModel, source=lambda key: "config", prefix: str = "") -> None:
    """Refuse a ``threads`` key (in any section) above the cores this process may use: more
    torch threads than cores only wait for each other (:mod:`segmix.runtime`).

    Checked where a config is read for a run, not in the schema: a model file trained on a
    bigger machine still loads.

    Raises:
        ConfigError: naming where the value came from, the key and the cores.
    """
    cores = usable_cores()
    for name in type(cfg).model_fields:
        value, key = getattr(cfg, name), f"{prefix}{name}"
        if isinstance(value, BaseModel):
            check_threads(value, source, f"{key}.")
        elif name == "threads" and isinstance(value, int) and value > cores:
            raise ConfigError(f"{source(key)}: {key}: {value} threads, but this process may use {cores} cores")


def _blame(overrides: list[str], where: str):
    """Where a key's bad value came from: the ``--set`` that wrote the key, a section above it or a
    key inside it (``--set a.b.c=1`` makes the unknown section ``a.b``), else the file."""

    def source(key: str) -> str:
        for item in reversed(overrides):  # the last --set of a key is the one that holds
            name = item.split("=", 1)[0].strip()
            if name == key or name.startswith(key + ".") or key.startswith(name + "."):
                return f"--set {item}"
        return where

    return source


def config_hash(cfg: BaseModel) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def save_config(cfg: BaseModel, path: str | Path, **extra) -> None:
    """Write the config beside outputs, with library versions and anything in ``extra``."""
    import timm
    import torch

    from segmix import __version__
    from segmix.data.io import write_text

    doc = {
        **cfg.model_dump(mode="json"),
        "_meta": {
            "segmix": __version__,
            "torch": str(torch.__version__),
            "timm": timm.__version__,
            "python": platform.python_version(),
            "config_hash": config_hash(cfg),
            **extra,
        },
    }
    write_text(path, yaml.safe_dump(doc, sort_keys=False))


def commented_yaml(cfg: BaseModel, indent: int = 0) -> str:
    """``cfg`` as YAML with every key (defaults included), each followed by its description.

    What ``segmix config show`` prints: the keys ``--set`` accepts and their current values.
    """
    lines = []
    pad = "  " * indent
    items = [(name, getattr(cfg, name), field.description) for name, field in type(cfg).model_fields.items()]
    # A section with registered entries' knobs (mixers, curriculum rules) lists them under their names.
    items += [(name, knobs, None) for name, knobs in getattr(cfg, "knob_sections", dict)().items()]
    for name, value, description in items:
        note = f"  # {description}" if description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{note}")
            lines.append(commented_yaml(value, indent + 1).rstrip("\n"))
            continue
        dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{pad}{name}: {dumped}{note}")
    return "\n".join(lines) + "\n"
