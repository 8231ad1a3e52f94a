"""YAML configs validated by pydantic, with ``key.sub=value`` overrides from the command line."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ``["stage1.epochs=5", "seed=3"]`` (values parsed as YAML)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Read ``path`` (or defaults), apply overrides, validate; errors name the file and key."""
    raw: dict = {}
    where = str(path) if path else "defaults"
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{where}: cannot read config ({err})") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: config must be a mapping")
    raw = apply_overrides(raw, overrides or [])
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{where}: {problems}") from err


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
