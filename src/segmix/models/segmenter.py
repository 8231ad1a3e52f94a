"""Stage-2 segmentation networks (segmentation_models_pytorch) and sliding-window inference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from segmix.config.foundation import FOUNDATION_MODELS
from segmix.config.names import is_token_backbone, segmenter_arch
from segmix.errors import ConfigError
from segmix.models.foundation import load_foundation_weights, timm_name
from segmix.models.weights import hub_weights, load_backbone_weights


def create_segmenter(
    arch: str = "auto",
    encoder: str = "resnet18",
    classes: int = 5,
    encoder_weights: str | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """An smp model by name (``DeepLabV3Plus``, ``Unet``, ``FPN``, ``DPT``...).

    Args:
        arch: an smp architecture, or ``auto``: ``DPT`` for vision transformer encoders,
            ``DeepLabV3Plus`` otherwise.
        encoder: smp encoder name; ``tu-<timm name>`` for any timm backbone; a foundation model
            of :data:`~segmix.config.foundation.FOUNDATION_MODELS` (``uni``...).
        encoder_weights: smp's pretrained weights tag (``"imagenet"``; needs internet).
        weights: local backbone weights file, loaded into the encoder (timm ``tu-`` encoders,
            foundation models and smp's ResNets, whose names follow torchvision's).
    """
    recipe = encoder in FOUNDATION_MODELS
    timm_encoder = encoder[3:] if encoder.startswith("tu-") else None
    vit = recipe or (timm_encoder is not None and is_token_backbone(timm_encoder))
    arch = segmenter_arch(arch, encoder)
    name = f"tu-{timm_name(encoder)}" if recipe else encoder
    extra = {"dynamic_img_size": True} if vit else {}
    with hub_weights("model.encoder_weights", encoder):
        model = smp.create_model(arch, encoder_name=name, encoder_weights=encoder_weights, classes=classes, **extra)
    model.stain = None  # the stain normaliser of its training, set by load_segmenter
    if weights and recipe:
        load_foundation_weights(model.encoder.model, encoder, weights)
    elif weights:
        target = model.encoder.model if timm_encoder else model.encoder
        load_backbone_weights(target, timm_encoder or encoder, weights)
    return model


def check_window(model: nn.Module, window: int) -> None:
    """Refuse a window that a ViT segmenter cannot take: DPT fuses its token grid at halved
    resolutions, so ``window / patch`` must be even."""
    embed = getattr(getattr(getattr(model, "encoder", None), "model", None), "patch_embed", None)
    if embed is not None and isinstance(model, smp.DPT) and (window // embed.patch_size[0]) % 2:
        patch = embed.patch_size[0]
        raise ConfigError(
            f"train.image_size {window} gives {window // patch} x {window // patch} tokens of {patch} px; DPT needs an "
            f"even number: use {2 * patch * max(1, window // (2 * patch))} or {2 * patch * (window // (2 * patch) + 1)}"
        )


def segmenter_input(images: Tensor) -> Tensor:
    """Model input from images (..., 3, H, W), uint8 in [0, 255] or float in [0, 1]: float32,
    ImageNet-normalised (what smp's pretrained encoders expect)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def window_grid(height: int, width: int, window: int, stride: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of windows covering an (height, width) image, the last flush with the edge."""
    for y in _starts(height, window, stride):
        for x in _starts(width, window, stride):
            yield y, x


@torch.no_grad()
def sliding_window_probs(
    model: nn.Module,
    image: Tensor,
    num_classes: int,
    window: int,
    stride: int,
    batch_size: int = 16,
    flip: bool = False,
) -> Tensor:
    """Softmax probabilities of one normalised image (3, H, W), averaged over overlapping windows.

    Images smaller than a window are padded (reflect) and cropped back.

    Returns:
        float32 (C, H, W).
    """
    _, h, w = image.shape
    ph, pw = max(0, window - h), max(0, window - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        image = F.pad(image[None], (0, pw, 0, ph), mode=mode)[0]
    hh, ww = image.shape[-2:]
    probs = torch.zeros(num_classes, hh, ww, device=image.device)
    count = torch.zeros(1, hh, ww, device=image.device)
    corners = list(window_grid(hh, ww, window, stride))
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        batch = torch.stack([image[:, y : y + window, x : x + window] for y, x in chunk])
        out = predict_probs(model, batch, flip)
        for (y, x), p in zip(chunk, out):
            probs[:, y : y + window, x : x + window] += p
            count[:, y : y + window, x : x + window] += 1
    return (probs / count)[:, :h, :w]


def predict_probs(model: nn.Module, batch: Tensor, flip: bool = False) -> Tensor:
    """Softmax (B, C, H, W) of a normalised batch, optionally averaged with its flip."""
    x = batch.contiguous(memory_format=torch.channels_last)
    p = model(x).float().softmax(dim=1)
    if flip:
        p = (p + model(x.flip(-1)).float().softmax(dim=1).flip(-1)) / 2
    return p
