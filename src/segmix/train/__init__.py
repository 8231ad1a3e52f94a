"""Training: stage 1 (CAM classifier on mixed batches), stage 2 (segmenter on pseudo masks).

The model files they write are read by :mod:`segmix.models` (``load_classifier``,
``load_segmenter``), which needs none of this package.
"""

from segmix.config import CurriculumConfig, Stage1Config, Stage2Config
from segmix.train.stage1 import Stage1Module, build_mixer, train_classifier
from segmix.train.stage2 import Stage2Module, train_segmenter

__all__ = [
    "CurriculumConfig",
    "Stage1Config",
    "Stage1Module",
    "Stage2Config",
    "Stage2Module",
    "build_mixer",
    "train_classifier",
    "train_segmenter",
]
