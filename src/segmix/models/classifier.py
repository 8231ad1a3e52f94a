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

from segmix.models.weights import load_backbone_weights


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
        backbone: timm model name (``resnet18``, ``efficientnet_lite0``, ``convnext_atto``...).
        num_classes: K tissue classes.
        pretrained: timm's own pretrained weights (needs internet the first time).
        weights: local weights file for the backbone (see :func:`load_backbone_weights`).
        output_stride: 8 or 16 dilate the last stages for finer CAMs; None keeps 32.
        pool: global pooling, a key of :data:`POOLS`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 4,
        pretrained: bool = False,
        weights: str | Path | None = None,
        output_stride: int | None = None,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
        extra = {"output_stride": output_stride} if output_stride else {}
        self.encoder = timm.create_model(
            backbone, pretrained=pretrained, features_only=True, out_indices=(-1,), **extra
        )
        if weights:
            load_backbone_weights(self.encoder, backbone, weights)
        channels = self.encoder.feature_info.channels()[-1]
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.pool_name = pool
        self.data_config = timm.data.resolve_data_config({}, model=self.encoder)
        # Not in the state dict: they follow from the backbone, and old model files lack them.
        self.register_buffer("mean", torch.tensor(self.data_config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.data_config["std"]).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """The encoder's input from images (B, 3, H, W), uint8 in [0, 255] or float in [0, 1]:
        float32 normalised with the backbone's mean and std (contiguous, as given)."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
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
