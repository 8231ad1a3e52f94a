"""Networks: the CAM classifier of stage 1."""

from segmix.models.classifier import POOLS, CamClassifier
from segmix.models.weights import load_backbone_weights, load_state_dict

__all__ = ["CamClassifier", "POOLS", "load_backbone_weights", "load_state_dict"]
