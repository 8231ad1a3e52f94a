"""segmix: pixel-level tissue maps of H&E images from image-level labels.

Implements SegMix (shuffle-based feedback learning, arXiv 2604.15777). The package follows the
pipeline, data flowing one way: ``data`` (datasets, synthetic benchmark) -> ``shuffle`` (stage-1
batch mixing) -> ``models`` -> ``train`` (stage 1, stage 2) -> ``cam`` (pseudo masks) -> ``eval``
-> ``infer`` (new images, whole slides); ``pipeline`` runs them all, ``cli`` is the command line.
"""

__version__ = "0.1.0"
