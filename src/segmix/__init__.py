"""segmix: pixel-level tissue maps of H&E images from image-level labels.

Implements SegMix (shuffle-based feedback learning, arXiv 2604.15777). Layers, data flowing one
way, each importing only those below it (import-linter checks it, see ``pyproject.toml``):
``errors`` < ``data`` (datasets, synthetic benchmark) < ``shuffle`` (stage-1 batch mixing) <
``config`` (stage configs) < ``models`` (networks, model files, inference) < ``eval`` (metrics) <
``train`` (stage 1, stage 2) < ``cam`` (pseudo masks) < ``infer`` (new images, whole slides) <
``pipeline`` (runs them all) < ``cli`` (the command line).
"""

__version__ = "0.1.0"
