"""Stage-1 batch mixing: the SegMix shuffle, its curricula, and baselines behind one registry.

>>> from segmix.shuffle import SegMix
>>> mixer = SegMix(patch_size=32, ratio=0.5)
>>> images2, targets2, info = mixer(images, labels)           # doctest: +SKIP

Methods for ablation are named in :data:`METHODS` and built with :func:`create_method`
(:mod:`segmix.shuffle.registry`); every mixer follows the :class:`Mixer` protocol.
"""

from segmix.shuffle.baselines import NoMix, TimmMix
from segmix.shuffle.curriculum import (
    FEEDBACK_RULE,
    GAIN_RULE,
    MASTERY_RULE,
    Curriculum,
    FeedbackCurriculum,
    FeedbackRule,
    FixedCurriculum,
    GainCurriculum,
    GainRule,
    HistoryRow,
    Level,
    MasteryCurriculum,
    MasteryRule,
    ScheduledCurriculum,
    build_levels,
    patch_ladder,
    read_history_csv,
    write_history_csv,
)
from segmix.shuffle.mixer import Mixer
from segmix.shuffle.registry import (
    CURRICULA,
    LABEL_MIXERS,
    METHODS,
    MIXERS,
    Method,
    create_curriculum,
    create_method,
    create_mixer,
)
from segmix.shuffle.segmix import MixInfo, SegMix

__all__ = [
    "CURRICULA",
    "Curriculum",
    "FEEDBACK_RULE",
    "FeedbackCurriculum",
    "FeedbackRule",
    "FixedCurriculum",
    "GAIN_RULE",
    "GainCurriculum",
    "GainRule",
    "HistoryRow",
    "LABEL_MIXERS",
    "Level",
    "MASTERY_RULE",
    "METHODS",
    "MIXERS",
    "MasteryCurriculum",
    "MasteryRule",
    "Method",
    "MixInfo",
    "Mixer",
    "NoMix",
    "ScheduledCurriculum",
    "SegMix",
    "TimmMix",
    "build_levels",
    "create_curriculum",
    "create_method",
    "create_mixer",
    "patch_ladder",
    "read_history_csv",
    "write_history_csv",
]
