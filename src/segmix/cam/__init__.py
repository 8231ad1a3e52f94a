"""Pseudo masks from class activation maps.

>>> from segmix.cam import class_activation_maps, pseudo_masks
>>> masks = pseudo_masks(class_activation_maps(model, x), labels)   # doctest: +SKIP
"""

from segmix.cam.cams import class_activation_maps
from segmix.cam.masks import pseudo_masks
from segmix.cam.run import CamConfig, generate_pseudo_masks

__all__ = ["CamConfig", "class_activation_maps", "generate_pseudo_masks", "pseudo_masks"]
