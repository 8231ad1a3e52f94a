"""Write docs/config.md, the reference of every key of ``segmix run``'s config, from its pydantic
schema (the defaults and descriptions ``segmix config show`` prints).

    python docs/make_config_reference.py          # rewrite docs/config.md
    python docs/make_config_reference.py --check  # exit 1 when docs/config.md is not current

CI runs the check (tests/test_docs.py): the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

PAGE = Path(__file__).with_name("config.md")
HEADER = """# Configuration reference

Every key of a `segmix run` config (`configs/*.yaml`), with its default and what it does.
Generated from the code by `python docs/make_config_reference.py`; do not edit by hand.
`segmix config show NAME` prints the same keys with a config's own values; `--set KEY=VALUE`
changes one (dotted for sections). The stage commands read one section each: `train-cls`
`stage1`, `cams` `cams`, `train-seg` `stage2`; `relabel` reads `split`, `batch_size`, `white`,
`saturation`, `num_workers`, `threads` of `cams` and `margin`, `scales` of `relabel`.
"""


def _value(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _rows(cfg: BaseModel, prefix: str) -> tuple[list[str], list[tuple[str, BaseModel]]]:
    """Table rows of ``cfg``'s leaves, and its sub-sections (with their dotted names)."""
    rows, sections = [], []
    fields = [(name, getattr(cfg, name), field.description) for name, field in type(cfg).model_fields.items()]
    fields += [(name, knobs, None) for name, knobs in getattr(cfg, "knob_sections", dict)().items()]
    for name, value, description in fields:
        if isinstance(value, BaseModel):
            sections.append((f"{prefix}{name}", value))
            continue
        text = (description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | `{_value(value)}` | {text} |")
    return rows, sections


def reference() -> str:
    from segmix.pipeline import RunConfig

    out = [HEADER]
    todo = [("(top)", RunConfig())]
    while todo:
        name, cfg = todo.pop(0)
        rows, sections = _rows(cfg, "" if name == "(top)" else f"{name}.")
        doc = " ".join((type(cfg).__doc__ or "").strip().split("\n\n")[0].split())
        if rows:
            out += [f"## `{name}`", "", doc, "", "| key | default | what it does |", "|---|---|---|", *rows, ""]
        todo = sections + todo
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not current")
    args = parser.parse_args()
    text = reference()
    if args.check:
        current = PAGE.is_file() and PAGE.read_text() == text
        print(f"{PAGE}: {'current' if current else 'out of date: run python docs/make_config_reference.py'}")
        return 0 if current else 1
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
