"""Curricula: what drives a grid mixer's patch size and ratio over a ladder of levels.

A curriculum owns a ladder of levels (:mod:`segmix.shuffle.ladder`), easiest first: coarse
patches and few swaps, then finer patches and more swaps. It writes ``patch_size`` / ``ratio``
into the mixer it drives and is stepped once per feedback period (an epoch, or every N steps)
with a training signal. Here: the shared plumbing, the warm-up the feedback rules share, and the
two rules without feedback (``fixed``, ``scheduled``); the feedback rules are in
:mod:`segmix.shuffle.rules`.

Every step appends a :class:`~segmix.shuffle.history.HistoryRow` to ``history``;
``state_dict`` / ``load_state_dict`` resume with identical later decisions.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from pydantic import Field

from segmix.section import Section
from segmix.shuffle.history import HistoryRow
from segmix.shuffle.ladder import Level
from segmix.shuffle.mixer import Mixer
from segmix.shuffle.registry import register_curriculum

__all__ = ["Curriculum", "FixedCurriculum", "ScheduledCurriculum", "WarmupCurriculum", "WarmupKnobs"]


class Curriculum:
    """Shared plumbing: the ladder, the driven mixer (any object with ``patch_size`` and
    ``ratio``, see :class:`segmix.shuffle.Mixer`), the history and state.

    Subclasses set ``name`` (their registered name; ``aliases``: earlier names their saved
    states may carry) and define ``step(signal) -> HistoryRow``.
    """

    name = "base"
    aliases: tuple[str, ...] = ()
    reads_ahead = False  # True: ``step`` also takes ``ahead``, the probe at the next level (benchmarks/lookahead.py)

    def __init__(self, mixer: Mixer, levels: list[Level]) -> None:
        if not levels:
            raise ValueError("a curriculum needs at least one level")
        self.mixer = mixer
        self.levels = list(levels)
        self.level = 0
        self.step_count = 0
        self.history: list[HistoryRow] = []
        self._apply()

    @property
    def current(self) -> Level:
        return self.levels[self.level]

    def before_batch(self, generator: torch.Generator) -> None:
        """Called by stage 1 before each training batch with the batch's generator. The rules here
        change the level only between feedback periods and do nothing; a rule that draws a level
        per batch (the random-level control, ``benchmarks/random_level.py``) sets the mixer here."""

    def _is_off(self) -> bool:
        return False

    def _apply(self) -> None:
        self.mixer.patch_size = self.current.patch_size
        self.mixer.ratio = 0.0 if self._is_off() else self.current.ratio

    def _record(
        self, signal: float | None, action: str, error: float | None = None, threshold: float | None = None
    ) -> HistoryRow:
        self.step_count += 1
        self._apply()
        row = HistoryRow(
            self.step_count - 1, signal, error, threshold, self.level, self.mixer.patch_size, self.mixer.ratio, action
        )
        self.history.append(row)
        return row

    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "level": self.level,
            "step_count": self.step_count,
            "history": [asdict(r) for r in self.history],
            "levels": [asdict(lv) for lv in self.levels],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") not in (self.name, *self.aliases):
            raise ValueError(f"state is of curriculum {state.get('name')!r}, not {self.name!r}")
        if [Level(**lv) for lv in state["levels"]] != self.levels:
            raise ValueError("state was saved with another ladder of levels")
        self.level = int(state["level"])
        self.step_count = int(state["step_count"])
        self.history = [HistoryRow(**r) for r in state["history"]]
        self._apply()


class WarmupKnobs(Section):
    """The warm-up the feedback rules share: ``warmup`` steps at level 0, shuffle off if ``warmup_off``.

    None by default: the first epoch's reading is sound, and shuffling from the first batch is
    what the per-patch loss needs (the measurement: docs/results/defaults.md)."""

    warmup: int = Field(0, ge=0, description="epochs at level 0 before feedback starts")
    warmup_off: bool = Field(True, description="no mixing during warm-up")


class WarmupCurriculum(Curriculum):
    """A curriculum whose first ``warmup`` steps stay at level 0, with the shuffle off when
    ``warmup_off``. Subclasses set ``Knobs`` (a :class:`WarmupKnobs`) and call
    ``super().__init__(mixer, levels, **knobs)``: every knob becomes an attribute."""

    Knobs: type[WarmupKnobs] = WarmupKnobs
    state_keys: tuple[str, ...] = ()  # the rule's own state, saved beside the ladder's

    def __init__(self, mixer: Mixer, levels: list[Level], **knobs) -> None:
        for key, value in self.Knobs(**knobs).model_dump().items():
            setattr(self, key, value)
        super().__init__(mixer, levels)

    def _is_off(self) -> bool:
        return self.warmup_off and self.step_count < self.warmup

    def _score(self, signal: float) -> float:
        """``signal`` as a score in [0, 1], the localisation rules' input; ValueError otherwise."""
        score = float(signal)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{self.name} curriculum needs a score in [0, 1], got {signal}")
        return score

    def state_dict(self) -> dict:
        return {**super().state_dict(), **{k: getattr(self, k) for k in self.state_keys}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for k in self.state_keys:
            setattr(self, k, state[k])


class FixedKnobs(Section):
    level: int = Field(0, ge=0, description="the ladder level shuffle-fixed keeps (0: easiest)")


@register_curriculum(
    "fixed",
    FixedKnobs,
    description="one level all along",
    methods={"shuffle-fixed": "the shuffle at one ladder level (curriculum.fixed.level), no feedback"},
)
class FixedCurriculum(Curriculum):
    """Constant patch size and ratio (the ``shuffle-fixed`` ablation); ``level`` picks the rung."""

    name = "fixed"

    def __init__(self, mixer: Mixer, levels: list[Level], level: int = FixedKnobs().level) -> None:
        if not 0 <= level < len(levels):
            raise ValueError(f"fixed level {level}: the ladder has levels 0..{len(levels) - 1}")
        super().__init__(mixer, levels)
        self.level = level
        self._apply()

    def step(self, signal: float | None = None) -> HistoryRow:
        return self._record(signal, "hold")


@register_curriculum(
    "scheduled",
    takes_steps=True,
    description="level rises linearly with the epochs",
    methods={"shuffle-scheduled": "the shuffle from the easiest to the hardest level, linearly, no feedback"},
)
class ScheduledCurriculum(Curriculum):
    """Level rises linearly with the step count over ``total_steps`` (``shuffle-scheduled``)."""

    name = "scheduled"

    def __init__(self, mixer: Mixer, levels: list[Level], total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError("total_steps must be positive")
        self.total_steps = total_steps
        super().__init__(mixer, levels)

    def step(self, signal: float | None = None) -> HistoryRow:
        target = min(len(self.levels) - 1, (self.step_count + 1) * len(self.levels) // self.total_steps)
        action = "advance" if target > self.level else "hold"
        self.level = target
        return self._record(signal, action)
