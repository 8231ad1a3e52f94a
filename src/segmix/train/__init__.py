"""Training: stage 1 (CAM classifier on mixed batches), stage 2 (segmenter on pseudo masks)."""

from segmix.train.config import CurriculumConfig, Stage1Config, Stage2Config
from segmix.train.stage1 import Stage1Module, load_classifier, train_classifier
from segmix.train.stage2 import Stage2Module, load_segmenter, segment, train_segmenter

__all__ = [
    "CurriculumConfig",
    "Stage1Config",
    "Stage1Module",
    "Stage2Config",
    "Stage2Module",
    "load_classifier",
    "load_segmenter",
    "segment",
    "train_classifier",
    "train_segmenter",
]
