"""A curriculum's trace: one :class:`HistoryRow` per step, kept in ``curriculum.csv``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from segmix.data.io import write_text
from segmix.data.text import csv_text, read_csv

__all__ = ["HistoryRow", "read_history_csv", "write_history_csv"]


@dataclass(frozen=True)
class HistoryRow:
    """One curriculum step: its decision and the setting the mixer uses from then on.

    ``error`` is None only on curricula without feedback (fixed, scheduled): the feedback rules
    record it at warm-up too. ``threshold`` is None where the rule had nothing to compare with:
    the loss rule's warm-up and first step at a level, the gain rule's first reading, the
    mastery rule's warm-up.
    """

    step: int
    signal: float | None
    error: float | None
    threshold: float | None
    level: int
    patch_size: int | None
    ratio: float
    action: Literal["warmup", "hold", "advance", "back"]


def write_history_csv(history: list[HistoryRow], path: str | Path) -> None:
    """The curriculum's trace as CSV (``curriculum.csv``), one row per step, atomically."""
    write_text(path, csv_text([asdict(row) for row in history], [f.name for f in fields(HistoryRow)]))


def read_history_csv(path: str | Path) -> list[HistoryRow]:
    """The rows written by :func:`write_history_csv` (empty cells: None)."""

    def number(text: str, kind=float):
        return None if text == "" else kind(text)

    return [
        HistoryRow(
            int(r["step"]),
            number(r["signal"]),
            number(r["error"]),
            number(r["threshold"]),
            int(r["level"]),
            number(r["patch_size"], int),
            float(r["ratio"]),
            r["action"],
        )
        for r in read_csv(path)
    ]
