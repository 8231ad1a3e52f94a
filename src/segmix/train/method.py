"""The stage-1 config's mixing method: its mixer and curriculum, and the signal it reads."""

from __future__ import annotations

from segmix.config import Stage1Config
from segmix.shuffle import METHODS, Curriculum, Method, Mixer, create_method


def method_of(cfg: Stage1Config) -> Method:
    """The registered method the config names."""
    return METHODS[cfg.mixing.method]


def feedback_signal_name(cfg: Stage1Config) -> str:
    """What the curriculum reads each epoch; rules without feedback (and methods without a
    curriculum) record the training loss in their trace."""
    return method_of(cfg).signal(cfg.curriculum.signal) or "train_loss"


def build_mixer(cfg: Stage1Config) -> tuple[Mixer, Curriculum | None]:
    """``(mixer, curriculum or None)`` for the config's method, at the ladder's first level."""
    method = method_of(cfg)
    return create_method(
        method.name,
        cfg.levels(),
        probability=cfg.mixing.probability,
        total_steps=cfg.train.epochs,
        mixer=cfg.mixing.knobs(method.mixer),
        curriculum=cfg.curriculum.knobs(method.curriculum) if method.curriculum else None,
    )
