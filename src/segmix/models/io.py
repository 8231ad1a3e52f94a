"""Model files: ``classifier.pt`` and ``segmenter.pt``, written and read without training code.

A model file is plain data (tensors, the stage config as a dict, class names or the dataset
description), written atomically and read with ``weights_only=True``: loading one never runs
code from the file, and needs neither Lightning nor the dataset. The loaded model carries its
stain normaliser as ``model.stain`` (None when the stage trained without one): apply it to every
tile the model reads. Files written before the
configs had sections still load (their flat config is read into sections).

>>> from segmix.models import load_segmenter
>>> model = load_segmenter("RUN/relabel/segmenter.pt")      # doctest: +SKIP
>>> tissue = model.predict(image)                                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segmix.config import Stage1Config, Stage2Config
from segmix.config.stages import upgrade_flat_config
from segmix.data.io import write_atomic
from segmix.data.spec import DatasetSpec
from segmix.data.stain import StainNormalizer
from segmix.errors import ModelFileError, first_line
from segmix.models.classifier import CamClassifier
from segmix.models.package import is_package, read_package
from segmix.models.segmenter import create_segmenter
from segmix.models.trained import Segmenter
from segmix.models.weights import load_trusted_tensors

CLASSIFIER_FILE = "classifier.pt"
SEGMENTER_FILE = "segmenter.pt"


def save_payload(payload: dict, path: str | Path) -> None:
    """``torch.save`` of plain data and tensors, atomically (temp file + rename)."""
    write_atomic(path, lambda fh: torch.save(payload, fh))


def load_payload(path: str | Path, keys: set[str], what: str) -> dict:
    """A model file written by :func:`save_payload`, loaded with ``weights_only=True``, or a
    package folder of :mod:`segmix.models.package` (a classifier's may be its ``classifier/``).

    A file that would run code when unpickled, or lacks ``keys``, is refused with a clear message.
    """
    path = Path(path)
    if path.is_dir():
        nested = path / what
        return read_package(nested if is_package(nested) else path, what)
    payload = load_trusted_tensors(path, f"segmix {what}")
    if not isinstance(payload, dict) or not keys <= set(payload):
        raise ModelFileError(f"{path}: not a segmix {what} file (needs {', '.join(sorted(keys))})")
    return payload


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def save_classifier(
    model: CamClassifier,
    cfg: Stage1Config,
    classes: list[str],
    path: str | Path,
    stain: StainNormalizer | None = None,
    mpp: float | None = None,
) -> None:
    """Weights + config + class names (+ the fitted stain normaliser, the training tiles' microns
    per pixel), written atomically; plain data only."""
    payload = {
        "state_dict": _cpu_state(model.state_dict()),
        "config": cfg.model_dump(mode="json"),
        "classes": list(classes),
        "stain": stain.to_dict() if stain else None,
        "mpp": mpp,
    }
    save_payload(payload, path)


def load_classifier(path: str | Path) -> tuple[CamClassifier, Stage1Config, list[str]]:
    """Rebuild the classifier from ``classifier.pt`` (``weights_only=True``; no download) or a
    package folder (``segmix export``'s, or its ``classifier/``)."""
    payload = load_payload(path, {"state_dict", "config", "classes"}, "classifier")
    try:
        cfg = Stage1Config.model_validate(upgrade_flat_config(payload["config"], Stage1Config))
        m = cfg.model
        model = CamClassifier(m.backbone, len(payload["classes"]), False, None, m.output_stride, m.pool)
        _load_weights(model, payload["state_dict"], path, "classes")
        model.stain = StainNormalizer.from_dict(payload.get("stain"))
    except ModelFileError:
        raise
    except (ValueError, RuntimeError, TypeError, KeyError) as err:  # invalid config, weights of another model
        raise ModelFileError(f"{path}: the classifier cannot be rebuilt ({first_line(err)})") from err
    return model.eval(), cfg, list(payload["classes"])


def _load_weights(model: nn.Module, state: dict, path: str | Path, outputs: str) -> None:
    """``model.load_state_dict(state)``, first naming both counts when the output layer's (the
    last tensor's) differ: a model file whose class list was edited.

    Raises:
        ModelFileError: the counts differ.
        RuntimeError: other tensors missing or of another shape (torch's message).
    """
    head = next(reversed(model.state_dict().items()), None)
    if head is not None and isinstance(state.get(head[0]), torch.Tensor) and state[head[0]].ndim >= 1:
        trained, stated = state[head[0]].shape[0], head[1].shape[0]
        if trained != stated:
            raise ModelFileError(f"{path}: the weights predict {trained} {outputs}, the config names {stated}")
    model.load_state_dict(state)


def save_segmenter(
    state: dict, cfg: Stage2Config, spec: DatasetSpec, path: str | Path, stain: StainNormalizer | None = None
) -> None:
    """Weights + config + dataset description (+ the fitted stain normaliser), written atomically;
    plain data only."""
    payload = {
        "state_dict": _cpu_state(state),
        "config": cfg.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "stain": stain.to_dict() if stain else None,
    }
    save_payload(payload, path)


def load_segmenter(path: str | Path) -> Segmenter:
    """The :class:`~segmix.models.trained.Segmenter` (on the CPU; ``.to(device)`` moves it) of
    ``segmenter.pt`` (``weights_only=True``) or a package folder of ``segmix export``
    (safetensors + JSON).

    Raises:
        ModelFileError: missing, unsafe, or not a segmenter that can be rebuilt, naming the file.
    """
    payload = load_payload(path, {"state_dict", "config", "spec"}, "segmenter")
    try:
        cfg = Stage2Config.model_validate(upgrade_flat_config(payload["config"], Stage2Config))
        spec = DatasetSpec.model_validate(payload["spec"])
        model = create_segmenter(cfg.model.arch, cfg.model.encoder, spec.num_indices)
        _load_weights(model, payload["state_dict"], path, "mask indices (classes and background)")
        model.stain = StainNormalizer.from_dict(payload.get("stain"))
    except ModelFileError:
        raise
    except (ValueError, RuntimeError, TypeError, KeyError) as err:  # invalid config, weights of another model
        raise ModelFileError(f"{path}: the segmenter cannot be rebuilt ({first_line(err)})") from err
    return Segmenter(model.eval(), cfg, spec)
