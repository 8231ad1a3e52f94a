"""Inference: tissue maps of new images and whole slides."""

from segmix.infer.predict import SlideResult, area_rows, mask_polygons, predict_image, predict_slide
from segmix.infer.slide import SLIDE_SUFFIXES, choose_level, open_slide

__all__ = [
    "SLIDE_SUFFIXES",
    "SlideResult",
    "area_rows",
    "choose_level",
    "mask_polygons",
    "open_slide",
    "predict_image",
    "predict_slide",
]
