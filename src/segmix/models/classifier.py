"""Multi-label classifier whose class activation maps are well defined.

A timm encoder (any name, ``features_only``, optional dilation via ``output_stride``), a 1x1
convolution mapping features to one map per class, and a global pooling of those maps into
image logits. With average pooling the logits are exactly the spatial mean of the class maps,
so the maps are CAMs in the sense of Zhou et al. (CVPR 2016, arXiv 1512.04150).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segmix.config.foundation import FOUNDATION_MODELS
from segmix.config.names import is_token_backbone
from segmix.models.foundation import create_foundation_encoder
from segmix.models.weights import hub_weights, load_backbone_weights


def _lse(maps: Tensor, r: float = 5.0) -> Tensor:
    # log-mean-exp: between average (r -> 0) and max (r -> inf) pooling
    flat = maps.flatten(2)
    return (torch.logsumexp(r * flat, dim=2) - torch.log(torch.tensor(float(flat.shape[2])))) / r


POOLS = {
    "avg": lambda m: m.mean(dim=(2, 3)),
    "max": lambda m: m.amax(dim=(2, 3)),
    "lse": _lse,
}


class CamClassifier(nn.Module):
    """Encoder + 1x1 class head + global pooling.

    Args:
        backbone: timm model name (``resnet18``, ``efficientnet_lite0``, ``vit_small_patch16_224``...)
            or a foundation model of :data:`segmix.config.foundation.FOUNDATION_MODELS` (``uni``...).
        num_classes: K tissue classes.
        pretrained: timm's own pretrained weights (needs internet the first time).
        weights: local weights file for the backbone (see :func:`load_backbone_weights`).
        output_stride: CNNs: 8 or 16 dilate the last stages for finer CAMs, None keeps 32.
            Vision transformers: CAMs are the patch grid; an ``output_stride`` below the patch size
            runs the encoder on an input enlarged by ``patch / output_stride`` (more tokens).
        pool: global pooling, a key of :data:`POOLS`.
        depth: vision transformers only: build fewer blocks (tests; a model file stores it).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 4,
        pretrained: bool = False,
        weights: str | Path | None = None,
        output_stride: int | None = None,
        pool: str = "avg",
        depth: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
        self.token_grid = is_token_backbone(backbone)
        self.encoder = _encoder(backbone, pretrained, weights, None if self.token_grid else output_stride, depth)
        self.input_scale = 1.0
        if self.token_grid:
            self.input_scale = _input_scale(backbone, self.encoder, output_stride)
        channels = self.encoder.feature_info.channels()[-1]
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.pool_name = pool
        self.stain = None  # the stain normaliser of its training, set by load_classifier
        recipe = FOUNDATION_MODELS.get(backbone)
        self.data_config = (
            {"mean": recipe.mean, "std": recipe.std}
            if recipe
            else timm.data.resolve_data_config({}, model=self.encoder)
        )
        # Not in the state dict: they follow from the backbone, and old model files lack them.
        self.register_buffer("mean", torch.tensor(self.data_config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.data_config["std"]).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """The encoder's input from images (B, 3, H, W), uint8 in [0, 255] or float in [0, 1]:
        float32 normalised with the backbone's mean and std (contiguous, as given)."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        return self.encoder(x)[-1]

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-location class logits (B, K, h, w), bias included (what pooling sees)."""
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image logits (B, K) and the class maps (B, K, h, w) they pool."""
        maps = self.class_maps(x)
        return POOLS[self.pool_name](maps), maps

    def cams(self, x: Tensor) -> Tensor:
        """Raw CAMs (B, K, h, w): head weights over the features, without the bias."""
        return F.conv2d(self.features(x), self.head.weight)

    def freeze(self, trainable_blocks: int | None) -> None:
        """Train only the class head (``0``), or the head and the last ``trainable_blocks``
        transformer blocks (with the final norm); None trains everything."""
        if trainable_blocks is None:
            return
        self.encoder.requires_grad_(False)
        if trainable_blocks > 0:
            if not self.token_grid:
                raise ValueError("trainable_blocks > 0 needs a vision transformer backbone; 0 trains the head only")
            vit = self.encoder.model
            for block in list(vit.blocks)[-trainable_blocks:]:
                block.requires_grad_(True)
            norm = getattr(vit, "norm", None)
            if norm is not None:
                norm.requires_grad_(True)

    def param_groups(self, lr: float, backbone_lr: float | None) -> list[dict]:
        """AdamW groups: the head at ``lr``, the trainable encoder at ``backbone_lr`` (or ``lr``)."""
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        if encoder:
            groups.append({"params": encoder, "lr": lr if backbone_lr is None else backbone_lr})
        return groups


def _encoder(backbone: str, pretrained: bool, weights, output_stride: int | None, depth: int | None) -> nn.Module:
    if backbone in FOUNDATION_MODELS:
        return create_foundation_encoder(backbone, pretrained, weights, depth)
    extra: dict = {"output_stride": output_stride} if output_stride else {}
    if is_token_backbone(backbone):
        extra["dynamic_img_size"] = True  # any tile size, multi-scale CAMs
        if depth is not None:
            extra["depth"] = depth
    elif depth is not None:
        raise ValueError(f"depth is for vision transformers; {backbone} is not one")
    with hub_weights("model.pretrained", backbone):
        encoder = timm.create_model(backbone, pretrained=pretrained, features_only=True, out_indices=(-1,), **extra)
    if weights:
        load_backbone_weights(encoder, backbone, weights)
    return encoder


def _input_scale(backbone: str, encoder: nn.Module, output_stride: int | None) -> float:
    patch = encoder.model.patch_embed.patch_size[0]
    if not output_stride or output_stride >= patch:
        return 1.0
    if not getattr(encoder.model, "dynamic_img_size", False):
        raise ValueError(
            f"{backbone} takes a fixed input size: output_stride {output_stride} (finer than its patch {patch}) "
            "is not possible; set output_stride: null"
        )
    return patch / output_stride
