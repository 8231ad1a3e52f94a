"""Model packages: a folder that holds one trained model without its run, loadable without unpickling.

``model.safetensors`` (the weights, tensors only) and ``config.json`` (what rebuilds and feeds the
model: architecture, encoder, classes and palette, mask indices, input size, normalisation, stain
normaliser, training microns per pixel, the stage config and dataset description, the segmix
version that wrote it). ``segmix export`` writes the segmenter's package with a model card
(``README.md``) and the classifier's in ``classifier/`` beside it. :func:`read_package` returns the
same payload a ``.pt`` model file holds, so :func:`segmix.models.load_segmenter` and
:func:`~segmix.models.load_classifier` take either.

>>> import tempfile, torch
>>> from segmix.config import Stage2Config
>>> from segmix.data.spec import PRESETS
>>> payload = {"state_dict": {"w": torch.ones(2)}, "config": Stage2Config().model_dump(mode="json"),
...            "spec": PRESETS["luad-histoseg"].model_dump(mode="json"), "stain": None}
>>> folder = tempfile.mkdtemp()
>>> write_package(payload, "segmenter", folder)
>>> read_package(folder, "segmenter")["spec"]["classes"]
['TE', 'NEC', 'LYM', 'TAS']
"""

from __future__ import annotations

import json
from pathlib import Path

from segmix.config.names import segmenter_arch
from segmix.data.io import write_atomic, write_text
from segmix.errors import ModelFileError
from segmix.models.weights import load_trusted_tensors

FORMAT, FORMAT_VERSION = "segmix-model", 1
WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
KINDS = ("segmenter", "classifier")
# The keys config.json holds; another key means a format this segmix does not know.
CONFIG_KEYS = frozenset(
    {"format", "format_version", "segmix", "kind", "architecture", "encoder", "classes", "palette"}
    | {"mask_indices", "input_size", "normalization", "stain", "mpp", "config", "spec"}
)


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a package's ``config.json``."""
    return (Path(path) / CONFIG_FILE).is_file()


def package_config(payload: dict, kind: str) -> dict:
    """``config.json`` of a model file's payload (see :func:`segmix.models.io.save_segmenter`)."""
    from segmix import __version__

    cfg, spec = payload["config"], payload.get("spec")
    model = cfg["model"]
    classes = spec["classes"] if spec else payload["classes"]
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "segmix": __version__,
        "kind": kind,
        "architecture": segmenter_arch(model["arch"], model["encoder"]) if kind == "segmenter" else "CamClassifier",
        "encoder": model.get("encoder", model.get("backbone")),
        "classes": classes,
        "palette": spec["palette"] if spec else None,
        "mask_indices": (classes + ["background"] * (spec["background_index"] + 1 - len(classes))) if spec else None,
        "input_size": cfg["train"]["image_size"],
        "normalization": _normalization(kind, model),
        "stain": payload.get("stain"),
        "mpp": spec.get("mpp") if spec else payload.get("mpp"),
        "config": cfg,
        "spec": spec,
    }
    return doc


def _normalization(kind: str, model: dict) -> dict:
    """How pixels become the model's input: RGB / 255, then (x - mean) / std per channel."""
    if kind == "segmenter":  # segmix.models.segmenter_input
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return {"scale": "RGB / 255", "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD)}
    return {"scale": "RGB / 255", "mean_std": f"the backbone's own (timm data config of {model['backbone']})"}


def write_package(payload: dict, kind: str, folder: str | Path) -> None:
    """Write ``payload`` (a model file's content) as a package into ``folder``, each file atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    # Own, contiguous copies: safetensors refuses tensors that share memory.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in payload["state_dict"].items()}
    write_atomic(folder / WEIGHTS_FILE, lambda fh: fh.write(save(tensors)))
    write_text(folder / CONFIG_FILE, json.dumps(package_config(payload, kind), indent=2))


def read_package(folder: str | Path, kind: str) -> dict:
    """The payload of the package in ``folder`` (``state_dict``, ``config``, ``spec`` or
    ``classes``, ``stain``, ``mpp``); the weights are read by safetensors, never unpickled.

    Raises:
        ModelFileError: not a package of ``kind``, unknown keys, or written by a newer segmix.
    """
    folder = Path(folder)
    doc = _read_config(folder)
    if doc.get("format") != FORMAT or doc.get("kind") != kind:
        raise ModelFileError(f"{folder}: not a segmix {kind} package (config.json says {doc.get('kind')!r})")
    _check_version(folder, doc)
    state = load_trusted_tensors(folder / WEIGHTS_FILE, f"segmix {kind} weights")
    payload = {"state_dict": state, "config": doc["config"], "stain": doc.get("stain"), "mpp": doc.get("mpp")}
    return {**payload, "spec": doc["spec"]} if kind == "segmenter" else {**payload, "classes": doc["classes"]}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path}: unreadable package config ({err})") from err
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: not a segmix package config")
    unknown = sorted(set(doc) - CONFIG_KEYS)
    if unknown:
        raise ModelFileError(f"{path}: unknown keys {', '.join(unknown)} (a newer package format?); upgrade segmix")
    return doc


def _check_version(folder: Path, doc: dict) -> None:
    from segmix import __version__

    if doc.get("format_version", 0) > FORMAT_VERSION or _version(doc.get("segmix", "0")) > _version(__version__):
        raise ModelFileError(
            f"{folder}: written by segmix {doc.get('segmix')} (package format {doc.get('format_version')}), "
            f"newer than this segmix {__version__}; upgrade segmix to load it"
        )


def _version(text: str) -> tuple[int, ...]:
    """``"0.1.0"`` -> ``(0, 1, 0)``; a part that is not a number ends the tuple."""
    parts = []
    for part in str(text).split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
