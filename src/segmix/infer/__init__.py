"""Inference: tissue maps of new images and whole slides."""

from segmix.infer.cohort import COHORT_TABLE, SlideJob, check_slide_options, cohort_table, plan_cohort, predict_cohort
from segmix.infer.predict import (
    SlidePlan,
    SlideResult,
    area_rows,
    check_resolution,
    is_slide,
    mask_polygons,
    output_paths,
    plan_outputs,
    plan_slide,
    predict_image,
    predict_slide,
    prediction_inputs,
    read_slide_list,
    slide_probabilities,
)
from segmix.infer.slide import SLIDE_SUFFIXES, choose_level, open_slide

__all__ = [
    "COHORT_TABLE",
    "SlideJob",
    "check_slide_options",
    "cohort_table",
    "plan_cohort",
    "predict_cohort",
    "read_slide_list",
    "SLIDE_SUFFIXES",
    "SlidePlan",
    "SlideResult",
    "area_rows",
    "check_resolution",
    "choose_level",
    "is_slide",
    "output_paths",
    "plan_outputs",
    "plan_slide",
    "prediction_inputs",
    "mask_polygons",
    "open_slide",
    "predict_image",
    "predict_slide",
    "slide_probabilities",
]
