"""Stage-2 inference on images of any size: what ``evaluate``, ``predict`` and the report share."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmix.config import Stage2Config
from segmix.config.precision import autocast
from segmix.models.segmenter import predict_probs, segmenter_input, sliding_window_probs


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else the GPU when there is one (under torchrun / SLURM the one of
    this process's local rank, so that processes do not share GPU 0), else the CPU."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    return torch.device(f"cuda:{int(local) % torch.cuda.device_count()}" if local else "cuda")


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

    Window-sized images go through in one batch; others by sliding window (window =
    ``cfg.train.image_size``, stride ``cfg.inference.window_stride`` of it, overlapping softmax
    averaged), at ``precision`` (default: the model's own ``cfg.precision``; ``auto`` resolved
    for the device by :mod:`segmix.config.precision`). With ``scales`` other than ``(1.0,)``
    each image is also resized by each factor (bilinear) and the probabilities, resized back,
    are averaged: multi-scale test-time augmentation.
    """
    if tuple(scales) == (1.0,):
        return _probs_at_own_scale(model, images, cfg, device, num_classes, precision)
    total: list[torch.Tensor] | None = None
    for factor in scales:
        probs = _probs_at_own_scale(model, [_resized(im, factor) for im in images], cfg, device, num_classes, precision)
        probs = [_to_size(p, im.shape[:2]) for p, im in zip(probs, images)]
        total = probs if total is None else [t + p for t, p in zip(total, probs)]
    return [t / len(scales) for t in total]


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    """uint8 (H, W, 3) resized by ``factor`` (bilinear, rounded back to uint8)."""
    if factor == 1.0:
        return image
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()


def _to_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]


def _probs_at_own_scale(
    model: nn.Module, images: list[np.ndarray], cfg: Stage2Config, device, num_classes: int, precision: str | None
) -> list[torch.Tensor]:
    """:func:`segment_probs` at the images' own size."""
    s = cfg.train.image_size
    flip = cfg.inference.flip
    out: list[torch.Tensor | None] = [None] * len(images)
    tiles = [i for i, im in enumerate(images) if im.shape[:2] == (s, s)]
    with autocast(precision or cfg.precision, torch.device(device).type):
        if tiles:
            batch = torch.stack([torch.from_numpy(np.asarray(images[i])).to(device).permute(2, 0, 1) for i in tiles])
            for i, p in zip(tiles, predict_probs(model, segmenter_input(batch), flip)):
                out[i] = p
        for i, im in enumerate(images):
            if out[i] is None:
                x = segmenter_input(torch.from_numpy(np.asarray(im)).to(device).permute(2, 0, 1))
                stride = max(1, int(s * cfg.inference.window_stride))
                out[i] = sliding_window_probs(model, x, num_classes, s, stride, flip=flip)
    return out


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
