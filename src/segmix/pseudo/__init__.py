"""Pseudo masks: the classifier's CAMs (refined, label-gated) and, in relabel rounds, a
segmenter's own label-gated predictions, written and scored the same way.

>>> from segmix.pseudo import class_activation_maps, pseudo_masks
>>> masks = pseudo_masks(class_activation_maps(model, x), labels)   # doctest: +SKIP
"""

from segmix.config.pseudo import CamConfig, RelabelConfig
from segmix.pseudo.cam_masks import generate_pseudo_masks
from segmix.pseudo.cams import class_activation_maps
from segmix.pseudo.masks import gated_masks, pseudo_masks
from segmix.pseudo.relabel import relabel_masks

__all__ = [
    "CamConfig",
    "RelabelConfig",
    "class_activation_maps",
    "gated_masks",
    "generate_pseudo_masks",
    "pseudo_masks",
    "relabel_masks",
]
