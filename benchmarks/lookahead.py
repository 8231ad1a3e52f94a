"""The lookahead rule as a plug-in (method ``segmix-lookahead``): advance when the probe reads the
next level at least as well as the current one, or the level is mastered.

Each epoch the probe reads the same held-out cells at the current level and, for a rule with
``reads_ahead``, shuffled at the next level (``ahead``, the ``ahead`` column of ``probe.csv``): a
model that localises the next level's finer or more mixed cells as well as the current ones is
ready for it, whatever line the current reading reaches on the tissue at hand.

1. Warm-up (``warmup`` steps at level 0).
2. ``advance`` when ``ahead >= score - tolerance`` or ``score >= mastery``;
3. ``back`` when the score falls ``collapse`` or more below the level's best (as mastery);
4. ``hold`` otherwise. A move resets the level's best.

Why a plug-in: it lost where it was measured (glas-dev at 224 px, docs/results/glas-dev-224.md:
it advanced on a difference inside the probe's noise to a worse level). It stays for the regime
it was built for: tissue where the mastery line is never crossed (real glands hold level 0) while
a finer level localises as well. Importing this module registers it.
"""

from __future__ import annotations

from pydantic import Field

from segmix.shuffle import HistoryRow, MasteryCurriculum, register_curriculum
from segmix.shuffle.rules import MasteryLineKnobs


class LookaheadKnobs(MasteryLineKnobs):
    tolerance: float = Field(0.0, ge=0, le=1, description="how far the next level's reading may lie below the current")


@register_curriculum(
    "lookahead",
    LookaheadKnobs,
    signal="cell_accuracy",
    line="mastery",
    description="advance when the next level localises as well as the current one, or this one is mastered",
    methods={"segmix-lookahead": "the shuffle driven by the lookahead rule on the probe at this and the next level"},
)
class LookaheadCurriculum(MasteryCurriculum):
    """The mastery rule with one more reason to advance: the next level reads as well.

    ``step(score, ahead)``: ``ahead`` is the reading at the next level (None at the top). Every rise
    is a new best (``min_gain`` 0); ``HistoryRow.error`` is ``1 - score``, ``threshold`` ``1 - mastery``.

    Examples:
        >>> from segmix.shuffle import Level
        >>> class Grid:
        ...     patch_size, ratio = 56, 0.25
        >>> rule = LookaheadCurriculum(Grid(), [Level(56, 0.25), Level(16, 0.25)])
        >>> rule.step(0.70, ahead=0.62).action  # the finer cells read worse: not yet
        'hold'
        >>> rule.step(0.72, ahead=0.73).action, rule.level
        ('advance', 1)
    """

    name = "lookahead"
    Knobs = LookaheadKnobs
    reads_ahead = True
    min_gain = 0.0  # not a knob here: the level's best is its highest reading

    def step(self, signal: float, ahead: float | None = None) -> HistoryRow:
        score = self._score(signal)
        ready = ahead is not None and self._score(ahead) >= score - self.tolerance
        return self._decide(score, ready)
