"""Difficulty curricula for the shuffle: mastery and gain feedback (SegMix), loss feedback, scheduled and fixed.

A curriculum owns a ladder of levels, easiest first: coarse patches and few swaps, then finer
patches and more swaps. It writes ``patch_size`` / ``ratio`` into the mixer it drives and is
stepped once per feedback period (an epoch, or every N steps) with a training signal.

The mastery rule (:class:`MasteryCurriculum`, SegMix's default) reads a localisation score in
[0, 1] measured at the current level (stage 1's ``cell_accuracy``: how often the label-gated
CAM of a held-out cell of known class, in a shuffled image, picks that class):

1. Warm-up as below.
2. ``advance`` when the score reaches ``mastery``: the level is mastered;
3. ``back`` when it falls ``collapse`` or more below the best score seen at this level;
4. ``hold`` while it improves (by ``min_gain`` over the level's best, or on the level's first step);
5. with ``patience`` > 0, ``advance`` after ``patience`` steps without improvement: the level has
   taught what it can (a plateau), else ``hold``. A move resets the level's best.

The gain rule (:class:`GainCurriculum`, method ``segmix-gain``) reads a score that means the
same at every level (stage 1's ``val_miou``: label-gated CAMs against the val split's masks), so
it can compare levels with each other:

1. Warm-up as below; its scores count towards the best.
2. ``back`` when the score is ``drop`` or more below the best so far: this level costs what the
   method is for;
3. ``advance`` when the score is at least the best so far (a harder level did not cost it) and
   the level has been held ``dwell`` steps;
4. with ``patience`` > 0, ``advance`` after ``patience`` steps without a new best (a plateau),
   else ``hold``. The best is kept across levels, never reset by a move.

The older relative rule (:class:`FeedbackCurriculum`), with ``e_t`` the error at step ``t``
(the signal itself in ``mode="loss"``; ``1 - signal`` in ``mode="score"``):

1. During the first ``warmup`` steps the level stays at 0 (shuffle off when
   ``warmup_off``); action ``warmup``.
2. The first step at a level records its reference ``ref = e_t`` and best ``best = e_t``;
   action ``hold``.
3. Later steps compute the threshold ``thr = ref * (1 - min(advance * (1 + tighten * t), 0.9))``,
   which tightens as training goes on:

   - ``advance`` (one level harder) when ``e_t <= thr``: learning at this level succeeded;
   - ``back`` (one level easier) when ``e_t >= best * (1 + backoff)``: clearly worse than the
     best seen at this level, the model is struggling;
   - ``hold`` otherwise.

   A move resets ``ref`` and ``best`` at the new level. The top level only holds or steps back,
   level 0 only holds or advances.

   Measured: on the mixed-batch loss this rule advances every second epoch whatever the model
   can do (the first epoch at a level sets ``ref``, the next is always 5 % lower), a schedule in
   disguise; it is kept as the ``segmix-loss`` method for comparison.

Replay (``batch_level``, config ``mixing.replay``): any curriculum can mix a share of batches at
an easier level than its current one, drawn uniformly, so what the coarse levels taught (context
over large regions) keeps being trained while the frontier moves to finer patches. Measured
(README): replay 0.5 costs the mastery rule 2 points of pseudo-mask mIoU on the default
benchmark, so it is off by default; the finest fixed level with replay 5/6 is the random-level
control (every batch's level drawn from the whole ladder).

Every step appends a :class:`HistoryRow` (step, signal, error, threshold, level, patch_size,
ratio, action) to ``history``; ``state_dict`` / ``load_state_dict`` resume with identical later
decisions. The rules' defaults (:data:`MASTERY_RULE`, :data:`GAIN_RULE`, :data:`FEEDBACK_RULE`)
are also the config's (:class:`segmix.config.CurriculumConfig`): the API and ``segmix run``
behave alike.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from segmix.data.io import csv_text, write_text
from segmix.shuffle.mixer import Mixer

__all__ = [
    "FEEDBACK_RULE",
    "Curriculum",
    "FeedbackCurriculum",
    "FeedbackRule",
    "FixedCurriculum",
    "GAIN_RULE",
    "GainCurriculum",
    "GainRule",
    "HistoryRow",
    "Level",
    "MASTERY_RULE",
    "MasteryCurriculum",
    "MasteryRule",
    "ScheduledCurriculum",
    "build_levels",
    "patch_ladder",
    "read_history_csv",
    "write_history_csv",
]


@dataclass(frozen=True)
class Level:
    """One rung of the ladder: grid patch edge (pixels) and share of positions swapped."""

    patch_size: int
    ratio: float


@dataclass(frozen=True)
class HistoryRow:
    """One curriculum step: its decision and the setting the mixer uses from then on.

    ``error`` and ``threshold`` are None where the rule did not compute them (warm-up, the
    first step at a level, curricula without feedback).
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

    with open(path, newline="") as fh:
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
            for r in csv.DictReader(fh)
        ]


@dataclass(frozen=True)
class WarmupRule:
    """The warm-up both feedback rules share: ``warmup`` steps at level 0, shuffle off if ``warmup_off``.

    None by default: an epoch without shuffling cost the mastery rule 3.2 pseudo-mask points on
    real colon tiles (glas-dev, seed 0) and 0.5-0.9 on the synthetic benchmarks (2 seeds each):
    the first epoch's reading is sound, and shuffling from the first batch is what the per-patch
    loss needs (``benchmarks/real.py``, ``benchmarks/feedback.py``; README)."""

    warmup: int = 0
    warmup_off: bool = True


@dataclass(frozen=True)
class FeedbackRule(WarmupRule):
    """The constants of the relative rule (module docstring); the one source of their defaults."""

    mode: Literal["loss", "score"] = "loss"
    advance: float = 0.05
    tighten: float = 0.05
    backoff: float = 0.10


FEEDBACK_RULE = FeedbackRule()


def patch_ladder(tile_size: int, min_patch: int = 8, max_levels: int | None = None, multiple_of: int = 1) -> list[int]:
    """Patch sizes from coarse to fine: divisors of ``tile_size`` in [min_patch, tile_size // 2]
    that are multiples of ``multiple_of`` (a ViT's token size: shuffled patches then align with
    tokens, and each CAM cell has one source).

    With ``max_levels`` the ladder is thinned evenly, keeping the coarsest and finest sizes.
    """
    sizes = [d for d in range(tile_size // 2, min_patch - 1, -1) if tile_size % d == 0 and d % multiple_of == 0]
    if not sizes:
        raise ValueError(
            f"no divisor of {tile_size} that is a multiple of {multiple_of} lies in [{min_patch}, {tile_size // 2}]"
        )
    if max_levels is not None and len(sizes) > max_levels >= 2:
        picks = [round(i * (len(sizes) - 1) / (max_levels - 1)) for i in range(max_levels)]
        sizes = [sizes[i] for i in sorted(set(picks))]
    return sizes


def build_levels(patch_sizes: list[int], ratio_floor: float, ratio_ceiling: float, ratio_steps: int = 2) -> list[Level]:
    """Ladder of levels: for each patch size (coarse to fine), ratios from floor to ceiling."""
    if not 0.0 <= ratio_floor <= ratio_ceiling <= 1.0:
        raise ValueError(f"need 0 <= ratio_floor <= ratio_ceiling <= 1, got {ratio_floor}, {ratio_ceiling}")
    steps = max(1, ratio_steps)
    ratios = [ratio_floor + (ratio_ceiling - ratio_floor) * i / max(steps - 1, 1) for i in range(steps)]
    return [Level(ps, round(r, 6)) for ps in patch_sizes for r in ratios]


class Curriculum:
    """Shared plumbing: the ladder, the driven mixer (any object with ``patch_size`` and
    ``ratio``, see :class:`segmix.shuffle.Mixer`), the history and state."""

    name = "base"

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

    def batch_level(self, replay: float, generator: torch.Generator | None = None) -> Level:
        """The level one batch is mixed at: the current one or, with probability ``replay``, an
        easier one drawn uniformly (level 0 has none). Draws two numbers from ``generator``
        whatever the outcome, so the stream does not depend on the level."""
        if not 0.0 <= replay <= 1.0:
            raise ValueError(f"replay must lie in [0, 1], got {replay}")
        u = torch.rand(2, generator=generator).tolist()
        if self._is_off() or self.level == 0 or u[0] >= replay:
            return self.current
        return self.levels[min(int(u[1] * self.level), self.level - 1)]

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
        if state.get("name") != self.name:
            raise ValueError(f"state is of curriculum {state.get('name')!r}, not {self.name!r}")
        if [Level(**lv) for lv in state["levels"]] != self.levels:
            raise ValueError("state was saved with another ladder of levels")
        self.level = int(state["level"])
        self.step_count = int(state["step_count"])
        self.history = [HistoryRow(**r) for r in state["history"]]
        self._apply()


class WarmupCurriculum(Curriculum):
    """A curriculum whose first ``warmup`` steps stay at level 0, with the shuffle off when
    ``warmup_off`` (subclasses set both before ``Curriculum.__init__``)."""

    warmup: int = 0
    warmup_off: bool = False
    state_keys: tuple[str, ...] = ()  # the rule's own state, saved beside the ladder's

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


class FixedCurriculum(Curriculum):
    """Constant patch size and ratio (the ``shuffle-fixed`` ablation); ``level`` picks the rung."""

    name = "fixed"

    def __init__(self, mixer: Mixer, levels: list[Level], level: int = 0) -> None:
        super().__init__(mixer, levels)
        self.level = level
        self._apply()

    def step(self, signal: float | None = None) -> HistoryRow:
        return self._record(signal, "hold")


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


class FeedbackCurriculum(WarmupCurriculum):
    """SegMix's feedback rule (see the module docstring for the exact decision rule).

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`build_levels`).
        mode: ``"loss"`` (lower is better, e.g. BCE on mixed batches) or ``"score"``
            (higher is better, in [0, 1], e.g. held-out F1).
        advance: relative improvement over the level's reference needed to advance.
        tighten: growth of that requirement per step, ``advance * (1 + tighten * t)``.
        backoff: relative worsening over the level's best that steps back.
        warmup: steps at level 0 before feedback starts.
        warmup_off: shuffle off (ratio 0) during warm-up, rather than at level 0.
    """

    name = "feedback"
    state_keys = ("ref", "best")

    def __init__(
        self,
        mixer: Mixer,
        levels: list[Level],
        mode: Literal["loss", "score"] = FEEDBACK_RULE.mode,
        advance: float = FEEDBACK_RULE.advance,
        tighten: float = FEEDBACK_RULE.tighten,
        backoff: float = FEEDBACK_RULE.backoff,
        warmup: int = FEEDBACK_RULE.warmup,
        warmup_off: bool = FEEDBACK_RULE.warmup_off,
    ) -> None:
        if mode not in ("loss", "score"):
            raise ValueError(f"mode must be 'loss' or 'score', got {mode!r}")
        self.mode, self.advance, self.tighten, self.backoff = mode, advance, tighten, backoff
        self.warmup, self.warmup_off = warmup, warmup_off
        self.ref: float | None = None
        self.best: float | None = None
        super().__init__(mixer, levels)

    def threshold(self, step: int) -> float | None:
        if self.ref is None:
            return None
        return self.ref * (1.0 - min(self.advance * (1.0 + self.tighten * step), 0.9))

    def step(self, signal: float) -> HistoryRow:
        signal = float(signal)
        if not math.isfinite(signal):
            raise ValueError(f"curriculum signal must be finite, got {signal}")
        error = signal if self.mode == "loss" else 1.0 - signal
        t = self.step_count
        if t < self.warmup:
            return self._record(signal, "warmup", error)
        if self.ref is None:
            self.ref = self.best = error
            return self._record(signal, "hold", error)
        thr = self.threshold(t)
        if error <= thr and self.level < len(self.levels) - 1:
            action, self.level = "advance", self.level + 1
        elif error >= self.best * (1.0 + self.backoff) and self.level > 0:
            action, self.level = "back", self.level - 1
        else:
            action, self.best = "hold", min(self.best, error)
        if action != "hold":
            self.ref = self.best = None
        return self._record(signal, action, error, thr)


@dataclass(frozen=True)
class MasteryRule(WarmupRule):
    """The constants of the mastery rule (module docstring); the one source of their defaults."""

    mastery: float = 0.9
    collapse: float = 0.05
    patience: int = 0
    min_gain: float = 0.01


MASTERY_RULE = MasteryRule()


class MasteryCurriculum(WarmupCurriculum):
    """SegMix's feedback on a localisation score: advance when the level is mastered, hold while
    learning, step back when the score collapses (module docstring).

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`build_levels`).
        mastery: score in [0, 1] at which a level counts as mastered.
        collapse: drop below the level's best score that steps back.
        patience: steps without improvement after which a level counts as learnt (0: never).
        min_gain: least rise over the level's best that counts as improvement.
        warmup: steps at level 0 before feedback starts.
        warmup_off: shuffle off (ratio 0) during warm-up, rather than at level 0.

    ``HistoryRow.error`` is ``1 - score`` and ``threshold`` is ``1 - mastery``.
    """

    name = "mastery"
    state_keys = ("best", "stalled")

    def __init__(
        self,
        mixer: Mixer,
        levels: list[Level],
        mastery: float = MASTERY_RULE.mastery,
        collapse: float = MASTERY_RULE.collapse,
        patience: int = MASTERY_RULE.patience,
        min_gain: float = MASTERY_RULE.min_gain,
        warmup: int = MASTERY_RULE.warmup,
        warmup_off: bool = MASTERY_RULE.warmup_off,
    ) -> None:
        if not 0.0 < mastery <= 1.0 or collapse < 0.0 or patience < 0 or min_gain < 0.0:
            raise ValueError(
                f"need 0 < mastery <= 1 and collapse, patience, min_gain >= 0; got {mastery}, {collapse}, "
                f"{patience}, {min_gain}"
            )
        self.mastery, self.collapse, self.patience, self.min_gain = mastery, collapse, patience, min_gain
        self.warmup, self.warmup_off = warmup, warmup_off
        self.best: float | None = None
        self.stalled = 0
        super().__init__(mixer, levels)

    def step(self, signal: float) -> HistoryRow:
        score = self._score(signal)
        error, threshold = 1.0 - score, 1.0 - self.mastery
        if self.step_count < self.warmup:
            return self._record(score, "warmup", error)
        top = self.level == len(self.levels) - 1
        if score >= self.mastery and not top:
            action, self.level = "advance", self.level + 1
        elif self.best is not None and score <= self.best - self.collapse and self.level > 0:
            action, self.level = "back", self.level - 1
        elif self.best is None or score >= self.best + self.min_gain:
            action, self.best, self.stalled = "hold", max(self.best or 0.0, score), 0
        else:
            self.stalled += 1
            plateau = self.patience > 0 and self.stalled >= self.patience and not top
            action = "advance" if plateau else "hold"
            self.level += plateau
        if action != "hold":
            self.best, self.stalled = None, 0
        return self._record(score, action, error, threshold)


@dataclass(frozen=True)
class GainRule(WarmupRule):
    """The constants of the gain rule (module docstring); the one source of their defaults."""

    drop: float = 0.02
    dwell: int = 1
    patience: int = 0


GAIN_RULE = GainRule()


class GainCurriculum(WarmupCurriculum):
    """SegMix's feedback on a score that means the same at every level (stage 1's ``val_miou``):
    go harder while the score keeps reaching new bests, step back when a level costs it.

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`build_levels`).
        drop: fall below the best score so far that steps back.
        dwell: least steps at a level before it may advance on a new best.
        patience: steps without a new best (and without a drop) after which the level advances
            anyway, so a plateau does not hold it for good (0: never).
        warmup: steps at level 0 before feedback starts.
        warmup_off: shuffle off (ratio 0) during warm-up, rather than at level 0.

    The best score is kept across levels (warm-up included), never reset by a move.
    ``HistoryRow.error`` is ``1 - score`` and ``threshold`` is ``1 - best`` before the step.
    """

    name = "gain"
    state_keys = ("best", "held", "stalled")

    def __init__(
        self,
        mixer: Mixer,
        levels: list[Level],
        drop: float = GAIN_RULE.drop,
        dwell: int = GAIN_RULE.dwell,
        patience: int = GAIN_RULE.patience,
        warmup: int = GAIN_RULE.warmup,
        warmup_off: bool = GAIN_RULE.warmup_off,
    ) -> None:
        if drop < 0.0 or dwell < 1 or patience < 0:
            raise ValueError(f"need drop >= 0, dwell >= 1 and patience >= 0; got {drop}, {dwell}, {patience}")
        self.drop, self.dwell, self.patience = drop, dwell, patience
        self.warmup, self.warmup_off = warmup, warmup_off
        self.best: float | None = None
        self.held = self.stalled = 0
        super().__init__(mixer, levels)

    def step(self, signal: float) -> HistoryRow:
        score = self._score(signal)
        best, threshold = self.best, None if self.best is None else 1.0 - self.best
        self.best = score if best is None else max(best, score)
        if self.step_count < self.warmup:
            return self._record(score, "warmup", 1.0 - score, threshold)
        self.held += 1
        top = self.level == len(self.levels) - 1
        if best is not None and score <= best - self.drop and self.level > 0:
            action = "back"
        elif best is None or score >= best:
            self.stalled = 0
            action = "advance" if self.held >= self.dwell and not top else "hold"
        else:
            self.stalled += 1
            action = "advance" if 0 < self.patience <= self.stalled and not top else "hold"
        self.level += {"advance": 1, "back": -1, "hold": 0}[action]
        if action != "hold":
            self.held = self.stalled = 0
        return self._record(score, action, 1.0 - score, threshold)
