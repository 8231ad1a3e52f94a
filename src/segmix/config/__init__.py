"""Configs: the stage configs that model files carry, and YAML reading / writing.

The stage configs live here, below ``models``, because a model file (``classifier.pt``,
``segmenter.pt``) stores its config and is rebuilt from it without the training code.

>>> from segmix.config import Stage1Config, load_config
>>> cfg = load_config(Stage1Config, "stage1.yaml", ["train.epochs=5"])   # doctest: +SKIP
"""

from segmix.config.files import commented_yaml, load_config, save_config
from segmix.config.stage1 import CurriculumConfig, Stage1Config
from segmix.config.stage2 import Stage2Config
from segmix.config.stages import RunOptions
from segmix.errors import ConfigError

__all__ = [
    "ConfigError",
    "CurriculumConfig",
    "RunOptions",
    "Stage1Config",
    "Stage2Config",
    "commented_yaml",
    "load_config",
    "save_config",
]
