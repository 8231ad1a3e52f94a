"""segmix: pixel-level tissue maps of H&E images from image-level labels.

Implements SegMix (shuffle-based feedback learning, arXiv 2604.15777). Layers, data flowing one
way, each importing only those below it (import-linter checks it, see ``pyproject.toml``):
``errors`` < ``section`` (the config sections' base) < ``data`` (datasets, synthetic benchmark) <
``shuffle`` (stage-1 batch mixing: mixers, curriculum rules, the method registry) < ``config``
(stage configs) < ``models`` (networks, model files, inference) < ``eval`` (metrics) < ``train``
(stage 1, stage 2) < ``cam`` (pseudo masks) < ``infer`` (new images, whole slides) <
``pipeline`` (runs them all) < ``cli`` (the command line).

The front door, imported on first use so that ``import segmix`` stays light:

>>> import segmix
>>> "segmix" in segmix.list_methods()
True
>>> levels = segmix.build_levels([56, 28], 0.25, 0.5)
>>> mixer, curriculum = segmix.create_method("segmix", levels, curriculum={"mastery": 0.8})
>>> model = segmix.load_segmenter("my-model")    # doctest: +SKIP
>>> tissue = model.predict("tile.png")           # doctest: +SKIP

``load_segmenter`` reads a package folder of ``segmix export`` or a model file (a run's final
model: ``RUN/relabel/segmenter.pt``) into a :class:`~segmix.models.trained.Segmenter`:
``predict(image)`` gives the class map, ``probs(image)`` the probabilities, ``classes`` and
``palette`` name and colour them. ``load_classifier`` reads stage 1's classifier;
``register_mixer`` / ``register_curriculum`` add a mixer or a rule that ``stage1.mixing.method``
can then name. Everything else is reached through its subpackage.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_segmenter": "segmix.models",
    "load_classifier": "segmix.models",
    "create_method": "segmix.shuffle",
    "list_methods": "segmix.shuffle",
    "build_levels": "segmix.shuffle",
    "register_mixer": "segmix.shuffle",
    "register_curriculum": "segmix.shuffle",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segmix' has no attribute {name!r}")
