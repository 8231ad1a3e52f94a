"""segmix: pixel-level tissue maps of H&E images from image-level labels.

Implements SegMix (shuffle-based feedback learning, arXiv 2604.15777). The package follows the
pipeline, data flowing one way: ``data`` -> ``shuffle`` (stage 1 augmentation) -> ``eval``.
"""

__version__ = "0.1.0"
