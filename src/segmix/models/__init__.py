"""Networks: the CAM classifier of stage 1, the segmenter of stage 2."""

from segmix.models.classifier import POOLS, CamClassifier
from segmix.models.segmenter import (
    create_segmenter,
    predict_probs,
    segmenter_input,
    sliding_window_probs,
    window_grid,
)
from segmix.models.weights import load_backbone_weights, load_state_dict

__all__ = [
    "CamClassifier",
    "POOLS",
    "create_segmenter",
    "load_backbone_weights",
    "load_state_dict",
    "predict_probs",
    "segmenter_input",
    "sliding_window_probs",
    "window_grid",
]
