"""segmix: pixel-level tissue maps of H&E images from image-level labels.

Implements SegMix (shuffle-based feedback learning, arXiv 2604.15777). Layers, data flowing one
way, each importing only those below it (import-linter checks it, see ``pyproject.toml``):
``errors`` < ``data`` (datasets, synthetic benchmark) < ``shuffle`` (stage-1 batch mixing) <
``config`` (stage configs) < ``models`` (networks, model files, inference) < ``eval`` (metrics) <
``train`` (stage 1, stage 2) < ``cam`` (pseudo masks) < ``infer`` (new images, whole slides) <
``pipeline`` (runs them all) < ``cli`` (the command line).
"""

__version__ = "0.1.0"

# ``segmix.load_segmenter`` and ``segmix.load_classifier`` (a model file or a package folder of
# ``segmix export``), imported on first use so that ``import segmix`` stays light.
_LAZY = {"load_segmenter": "segmix.models", "load_classifier": "segmix.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segmix' has no attribute {name!r}")
