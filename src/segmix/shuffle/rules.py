"""The feedback rules of SegMix's curriculum: mastery (the default), gain, and the loss rule.

The mastery rule (:class:`MasteryCurriculum`, method ``segmix``) reads a localisation score in
[0, 1] measured at the current level (stage 1's ``cell_accuracy``: how often the label-gated
CAM of a held-out cell of known class, in a shuffled image, picks that class):

1. Warm-up (:class:`~segmix.shuffle.curriculum.WarmupKnobs`): ``warmup`` steps at level 0.
2. ``advance`` when the score reaches ``mastery``: the level is mastered;
3. ``back`` when it falls ``collapse`` or more below the best score seen at this level;
4. ``hold`` otherwise; a rise of ``min_gain`` over the level's best (or the level's first step)
   sets a new best. A move resets the level's best.

The gain rule (:class:`GainCurriculum`, method ``segmix-gain``) reads a score that means the
same at every level (stage 1's ``val_miou``: label-gated CAMs against the val split's masks), so
it can compare levels with each other:

1. Warm-up as above; its scores count towards the best.
2. ``back`` when the score is ``drop`` or more below the best so far: this level costs what the
   method is for;
3. ``advance`` when the score is at least the best so far (a harder level did not cost it) and
   the level has been held ``dwell`` steps;
4. ``hold`` otherwise. The best is kept across levels, never reset by a move.

The loss rule (:class:`LossCurriculum`, method ``segmix-loss``; the first rule, named
``feedback`` before the other two), with ``e_t`` the error at step ``t`` (the signal itself in
``mode="loss"``; ``1 - signal`` in ``mode="score"``):

1. Warm-up as above; action ``warmup``.
2. The first step at a level records its reference ``ref = e_t`` and best ``best = e_t``;
   action ``hold``.
3. Later steps compute the threshold ``thr = ref * (1 - min(advance * (1 + tighten * t), 0.9))``,
   which tightens as training goes on: ``advance`` (one level harder) when ``e_t <= thr``;
   ``back`` (one level easier) when ``e_t >= best * (1 + backoff)``; ``hold`` otherwise. A move
   resets ``ref`` and ``best`` at the new level. The top level only holds or steps back, level 0
   only holds or advances.

   Measured: on the mixed-batch loss this rule advances every second epoch whatever the model
   can do (the first epoch at a level sets ``ref``, the next is always 5 % lower), a schedule in
   disguise; it is kept for comparison.

Each rule's knobs (defaults, bounds, descriptions) are its ``Knobs`` section, registered with it:
the config's ``curriculum.<rule>`` section, ``segmix config show`` and the classes read them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from segmix.shuffle.curriculum import WarmupCurriculum, WarmupKnobs
from segmix.shuffle.history import HistoryRow
from segmix.shuffle.ladder import Level
from segmix.shuffle.mixer import Mixer
from segmix.shuffle.registry import register_curriculum

__all__ = [
    "GainCurriculum",
    "GainKnobs",
    "LossCurriculum",
    "LossKnobs",
    "MasteryCurriculum",
    "MasteryKnobs",
    "MasteryLineKnobs",
]


class MasteryLineKnobs(WarmupKnobs):
    """The knobs of a rule that advances at a mastery line and steps back on a collapse (the
    mastery rule's, and a plug-in's such as ``benchmarks/lookahead.py``)."""

    mastery: float = Field(0.9, gt=0, le=1, description="cell accuracy at which a level is mastered")
    collapse: float = Field(0.05, ge=0, description="drop below the level's best score that steps back")


class MasteryKnobs(MasteryLineKnobs):
    min_gain: float = Field(0.01, ge=0, description="least rise that counts as improvement")


@register_curriculum(
    "mastery",
    MasteryKnobs,
    signal="cell_accuracy",
    line="mastery",
    description="advance when the level is mastered, step back when the score collapses",
    methods={"segmix": "SegMix: the shuffle driven by the mastery rule on the probe's cell accuracy (default)"},
)
class MasteryCurriculum(WarmupCurriculum):
    """SegMix's feedback on a localisation score: advance when the level is mastered, hold while
    learning, step back when the score collapses (module docstring).

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`~segmix.shuffle.build_levels`).
        **knobs: :class:`MasteryKnobs` (``mastery``, ``collapse``, ``min_gain``,
            ``warmup``, ``warmup_off``).

    ``HistoryRow.error`` is ``1 - score`` and ``threshold`` is ``1 - mastery``.
    """

    name = "mastery"
    Knobs = MasteryKnobs
    state_keys = ("best",)

    def __init__(self, mixer: Mixer, levels: list[Level], **knobs) -> None:
        self.best: float | None = None
        super().__init__(mixer, levels, **knobs)

    def step(self, signal: float) -> HistoryRow:
        return self._decide(self._score(signal), ready=False)

    def _decide(self, score: float, ready: bool) -> HistoryRow:
        """The rule on a checked score; ``ready``: a reason to advance besides mastery (a
        subclass's, such as the lookahead plug-in's reading of the next level)."""
        error, threshold = 1.0 - score, 1.0 - self.mastery
        if self.step_count < self.warmup:
            return self._record(score, "warmup", error)
        top = self.level == len(self.levels) - 1
        if (score >= self.mastery or ready) and not top:
            action, self.level = "advance", self.level + 1
        elif self.best is not None and score <= self.best - self.collapse and self.level > 0:
            action, self.level = "back", self.level - 1
        else:
            action = "hold"
            if self.best is None or score >= self.best + self.min_gain:
                self.best = max(self.best or 0.0, score)
        if action != "hold":
            self.best = None
        return self._record(score, action, error, threshold)


class LossKnobs(WarmupKnobs):
    mode: Literal["loss", "score"] = Field("loss", description="loss (lower is better) or score (higher)")
    advance: float = Field(0.05, ge=0, lt=1, description="relative gain over the level's reference that advances")
    tighten: float = Field(0.05, ge=0, description="growth of that requirement per step")
    backoff: float = Field(0.10, ge=0, description="relative loss over the level's best that steps back")


@register_curriculum(
    "loss",
    LossKnobs,
    signal="train_loss",
    description="advance on a relative fall of the mixed-batch loss (the first rule)",
    methods={"segmix-loss": "the shuffle driven by the loss rule on the mixed-batch loss (for comparison)"},
)
class LossCurriculum(WarmupCurriculum):
    """The loss rule (module docstring): advance on a relative gain over the level's reference.

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`~segmix.shuffle.build_levels`).
        **knobs: :class:`LossKnobs` (``mode``, ``advance``, ``tighten``, ``backoff``, ``warmup``,
            ``warmup_off``).
    """

    name = "loss"
    aliases = ("feedback",)  # its name in checkpoints written before the rules were registered
    Knobs = LossKnobs
    state_keys = ("ref", "best")

    def __init__(self, mixer: Mixer, levels: list[Level], **knobs) -> None:
        self.ref: float | None = None
        self.best: float | None = None
        super().__init__(mixer, levels, **knobs)

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


class GainKnobs(WarmupKnobs):
    drop: float = Field(0.02, ge=0, description="fall below the best score so far that steps back")
    dwell: int = Field(1, ge=1, description="least epochs at a level before it advances")


@register_curriculum(
    "gain",
    GainKnobs,
    signal="val_miou",
    description="go harder while the val mIoU of the CAMs keeps reaching new bests",
    methods={"segmix-gain": "the shuffle driven by the gain rule on the val split's CAM mIoU (needs val masks)"},
)
class GainCurriculum(WarmupCurriculum):
    """SegMix's feedback on a score that means the same at every level (stage 1's ``val_miou``):
    go harder while the score keeps reaching new bests, step back when a level costs it.

    Args:
        mixer: object with ``patch_size`` and ``ratio`` attributes (a :class:`SegMix`).
        levels: the ladder, easiest first (:func:`~segmix.shuffle.build_levels`).
        **knobs: :class:`GainKnobs` (``drop``, ``dwell``, ``warmup``, ``warmup_off``).

    The best score is kept across levels (warm-up included), never reset by a move.
    ``HistoryRow.error`` is ``1 - score`` and ``threshold`` is ``1 - best`` before the step.
    """

    name = "gain"
    Knobs = GainKnobs
    state_keys = ("best", "held")

    def __init__(self, mixer: Mixer, levels: list[Level], **knobs) -> None:
        self.best: float | None = None
        self.held = 0
        super().__init__(mixer, levels, **knobs)

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
        elif (best is None or score >= best) and self.held >= self.dwell and not top:
            action = "advance"
        else:
            action = "hold"
        self.level += {"advance": 1, "back": -1, "hold": 0}[action]
        if action != "hold":
            self.held = 0
        return self._record(score, action, 1.0 - score, threshold)
