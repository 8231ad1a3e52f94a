"""The folder of ``segmix run``, as everything after the run reads it: the final model, the
stages' JSON files and the seconds in ``metrics.json``.

One stage per folder (``stage1/``, ``cams/``, ``stage2/``, ``relabel/``, ...; see
:data:`segmix.pipeline.stages.STAGES`); the report, ``segmix export`` and ``segmix predict
--run`` find what they need here, so none of them depends on the code that runs the stages.
"""

from __future__ import annotations

import json
from pathlib import Path

from segmix.models import SEGMENTER_FILE


def run_segmenter(run_dir: Path) -> Path:
    """The final model of the run in ``run_dir``: the last relabel round's when the run has
    rounds, else stage 2's."""
    last = Path(run_dir) / "relabel" / SEGMENTER_FILE
    return last if last.is_file() else Path(run_dir) / "stage2" / SEGMENTER_FILE


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def stage_seconds(metrics: dict) -> dict[str, float]:
    """The seconds of ``metrics.json`` as rows in run order: each stage, and after the relabel stage
    each round's parts (``· round1: maps``, ``· round1: stage2``), which its own row already counts.

    >>> stage_seconds({"seconds": {"cams": 2.0, "relabel": 5.0},
    ...                "relabel": {"round1": {"seconds": {"maps": 1.0, "stage2": 4.0}}}})
    {'cams': 2.0, 'relabel': 5.0, '· round1: maps': 1.0, '· round1: stage2': 4.0}
    """
    rows = {}
    for stage, value in metrics.get("seconds", {}).items():
        rows[stage] = value
        for r, part in metrics.get(stage, {}).items() if stage == "relabel" else ():
            rows.update({f"· {r}: {k}": v for k, v in part.get("seconds", {}).items()})
    return rows
