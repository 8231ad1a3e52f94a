"""Stage-2 inference on images of any size: what ``evaluate``, ``predict`` and the report share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from segmix.config import Stage2Config
from segmix.errors import ModelFileError
from segmix.models.segmenter import input_multiple, segmenter_input
from segmix.models.tta import averaged_maps


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's tensors (names, dtypes, shapes, values) and stain normaliser: equal for
    the same weights whether loaded from ``segmenter.pt`` or an exported package."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    stain = getattr(model, "stain", None)
    digest.update(repr(None if stain is None else (stain.method, stain.fitted)).encode())
    return digest.hexdigest()


@torch.no_grad()
def segment_probs(
    model: nn.Module,
    images: list[np.ndarray],
    cfg: Stage2Config,
    device,
    num_classes: int,
    precision: str | None = None,
    scales: Sequence[float] = (1.0,),
) -> list[torch.Tensor]:
    """Softmax probabilities float32 (C, H, W) on ``device`` for uint8 (H, W, 3) images of any size.

    Images of one size that fit a window (``cfg.train.image_size``) go through together; larger
    ones one at a time. ``scales`` other than ``(1.0,)`` resize the images by each factor and
    average the probabilities resized back (multi-scale test-time augmentation), as
    ``cfg.inference.flip`` does with the flip; at each scale an image larger than the window goes
    by sliding window (stride ``cfg.inference.window_stride`` of it, overlapping softmax
    averaged), a smaller one whole, padded to the network's multiple
    (:func:`segmix.models.tta.averaged_maps`); at ``precision`` (default: the model's own
    ``cfg.precision``; ``auto`` resolved for inference on the device by
    :mod:`segmix.config.precision`).

    Raises:
        ModelFileError: the model gives another number of classes than ``num_classes``.
    """
    window = cfg.train.image_size
    stride = max(1, int(window * cfg.inference.window_stride))
    multiple = input_multiple(model)
    out: list[torch.Tensor | None] = [None] * len(images)
    for group in _same_size_groups(images, window):
        batch = torch.from_numpy(np.stack([np.asarray(images[i]) for i in group])).to(device).permute(0, 3, 1, 2)
        probs = averaged_maps(
            model,
            segmenter_input(batch),
            scales,
            cfg.inference.flip,
            window=window,
            stride=stride,
            multiple=multiple,
            precision=precision or cfg.precision,
        )
        if probs.shape[1] != num_classes:
            raise ModelFileError(f"the segmenter gives {probs.shape[1]} classes, {num_classes} expected")
        for i, p in zip(group, probs):
            out[i] = p
    return out


def _same_size_groups(images: list[np.ndarray], window: int) -> list[list[int]]:
    """Indices of ``images`` grouped by size, in order; an image larger than a window alone (its
    windows fill the forward passes, and one image's maps bound the memory)."""
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        size = im.shape[:2]
        key = size if max(size) <= window else (i,)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def segment(
    model: nn.Module,
    images: list[np.ndarray],
    cfg: Stage2Config,
    device,
    num_classes: int,
    precision: str | None = None,
) -> list[np.ndarray]:
    """Class-index maps uint8 (H, W) for uint8 (H, W, 3) images of any size: the most probable
    class of :func:`segment_probs`."""
    probs = segment_probs(model, images, cfg, device, num_classes, precision)
    return [p.argmax(0).to(torch.uint8).cpu().numpy() for p in probs]


def in_model_stain(model, image: np.ndarray) -> np.ndarray:
    """``image`` in the stain the model was trained on (its ``stain`` normaliser, when it has one)."""
    stain = getattr(model, "stain", None)
    return stain(image) if stain is not None else image
