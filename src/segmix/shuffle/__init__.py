"""Stage-1 batch mixing: the SegMix shuffle, its curricula, and baselines, behind one registry.

A method (``segmix``, ``segmix-gain``, ``shuffle-fixed``, ``cutmix``...) pairs a registered mixer
with a registered curriculum rule (:mod:`segmix.shuffle.registry`); each module registers what it
defines, so importing this package makes every built-in method selectable by name.

>>> from segmix.shuffle import SegMix, build_levels, create_method
>>> mixer = SegMix(patch_size=32, ratio=0.5)
>>> images2, targets2, info = mixer(images, labels)           # doctest: +SKIP
>>> mixer, curriculum = create_method("segmix", build_levels([56, 28], 0.25, 0.5))
"""

# Imported for their registrations as much as for their names: the mixers, then the rules.
from segmix.shuffle.baselines import NoMix, TimmMix
from segmix.shuffle.curriculum import Curriculum, WarmupCurriculum
from segmix.shuffle.history import HistoryRow, read_history_csv, write_history_csv
from segmix.shuffle.ladder import Level, build_levels, patch_ladder
from segmix.shuffle.mixer import Mixer
from segmix.shuffle.registry import (
    CURRICULA,
    METHODS,
    MIXERS,
    Method,
    create_curriculum,
    create_method,
    create_mixer,
    list_methods,
    register_curriculum,
    register_method,
    register_mixer,
)
from segmix.shuffle.rules import GainCurriculum, LossCurriculum, MasteryCurriculum
from segmix.shuffle.segmix import MixInfo, SegMix

__all__ = [
    "CURRICULA",
    "Curriculum",
    "GainCurriculum",
    "HistoryRow",
    "Level",
    "LossCurriculum",
    "METHODS",
    "MIXERS",
    "MasteryCurriculum",
    "Method",
    "MixInfo",
    "Mixer",
    "NoMix",
    "SegMix",
    "TimmMix",
    "WarmupCurriculum",
    "build_levels",
    "create_curriculum",
    "create_method",
    "create_mixer",
    "list_methods",
    "patch_ladder",
    "read_history_csv",
    "register_curriculum",
    "register_method",
    "register_mixer",
    "write_history_csv",
]
