"""Training: stage 1 (CAM classifier on mixed batches)."""

from segmix.train.config import CurriculumConfig, Stage1Config
from segmix.train.stage1 import Stage1Module, load_classifier, train_classifier

__all__ = ["CurriculumConfig", "Stage1Config", "Stage1Module", "load_classifier", "train_classifier"]
