"""Stage-2 segmentation networks (segmentation_models_pytorch): creation, input, what sizes they take."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from segmix.config.foundation import FOUNDATION_MODELS
from segmix.config.names import is_token_backbone, segmenter_arch
from segmix.errors import ConfigError
from segmix.models.foundation import load_foundation_weights, timm_name
from segmix.models.tta import flip_averaged, softmax
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


def input_multiple(model: nn.Module) -> int:
    """What a segmenter's input sides must be a multiple of: its encoder's output stride (smp
    refuses other sizes), twice a ViT's patch for DPT (:func:`check_window`); 1 for other modules."""
    encoder = getattr(model, "encoder", None)
    embed = getattr(getattr(encoder, "model", None), "patch_embed", None)
    if embed is not None and isinstance(model, smp.DPT):
        return 2 * embed.patch_size[0]
    return int(getattr(encoder, "output_stride", 1))


def predict_probs(model: nn.Module, batch: Tensor, flip: bool = False) -> Tensor:
    """Softmax float32 (B, C, H, W) of a normalised batch, optionally averaged with its flip
    (:func:`segmix.models.tta.flip_averaged`)."""
    return flip_averaged(model, batch, flip, softmax)
