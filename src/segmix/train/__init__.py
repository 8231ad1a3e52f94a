"""Training: stage 1 (CAM classifier on mixed batches), stage 2 (segmenter on pseudo masks).

The model files they write are read by :mod:`segmix.models` (``load_classifier``,
``load_segmenter``), which needs none of this package.
"""

from segmix.config import Stage1Config, Stage2Config
from segmix.train.method import build_mixer
from segmix.train.stage1 import train_classifier
from segmix.train.stage2 import train_segmenter

__all__ = [
    "Stage1Config",
    "Stage2Config",
    "build_mixer",
    "train_classifier",
    "train_segmenter",
]
