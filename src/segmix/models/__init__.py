"""Networks and their files: the CAM classifier of stage 1, the segmenter of stage 2, model
files that rebuild them without training code, and stage-2 inference.

>>> from segmix.models import load_segmenter
>>> model = load_segmenter("RUN/relabel/segmenter.pt")      # doctest: +SKIP
>>> tissue = model.predict(image)                           # doctest: +SKIP
"""

from segmix.models.classifier import CamClassifier
from segmix.models.inference import segment, segment_probs
from segmix.models.io import (
    CLASSIFIER_FILE,
    SEGMENTER_FILE,
    load_classifier,
    load_payload,
    load_segmenter,
    save_classifier,
    save_payload,
    save_segmenter,
)
from segmix.models.segmenter import create_segmenter, predict_probs, segmenter_input
from segmix.models.trained import Segmenter
from segmix.models.tta import averaged_maps, window_grid
from segmix.models.weights import load_backbone_weights

__all__ = [
    "CLASSIFIER_FILE",
    "CamClassifier",
    "SEGMENTER_FILE",
    "Segmenter",
    "averaged_maps",
    "create_segmenter",
    "load_backbone_weights",
    "load_classifier",
    "load_payload",
    "load_segmenter",
    "predict_probs",
    "save_classifier",
    "save_payload",
    "save_segmenter",
    "segment",
    "segment_probs",
    "segmenter_input",
    "window_grid",
]
