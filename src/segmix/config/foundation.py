"""Pathology foundation models by name: the timm recipe each needs, its normalisation and licence.

Most published pathology foundation models are timm vision transformers built with their own
constructor arguments (register tokens, SwiGLU MLPs, layer scale) and their own mean / std. A
:class:`FoundationModel` holds that recipe (from the model card of ``hub``), so a config can name
``backbone: uni2-h``; :mod:`segmix.models.foundation` builds it and loads its weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from timm.layers import SwiGLUPacked
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Constructor arguments that name layers: the JSON-able strings a recipe holds, and their classes.
_LAYERS: dict[str, Callable[..., nn.Module]] = {"swiglu_packed": SwiGLUPacked, "silu": nn.SiLU}


@dataclass(frozen=True)
class FoundationModel:
    """How to build one foundation model with timm.

    Attributes:
        arch: timm architecture the hub config names.
        kwargs: its constructor arguments (layer classes named by the keys of ``_LAYERS``).
        hub: Hugging Face repository (``pretrained: true`` loads ``hf-hub:<hub>``).
        patch_size: ViT patch edge: CAMs are ``image_size / patch_size`` wide.
        mean, std: the normalisation the model was trained with.
        licence: what the weights may be used for.
        weights_file: the file ``weights:`` expects (from the hub repository).
    """

    arch: str
    kwargs: dict[str, Any]
    hub: str
    patch_size: int
    licence: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_file: str = "pytorch_model.bin"
    notes: str = field(default="", compare=False)

    def timm_kwargs(self, depth: int | None = None) -> dict[str, Any]:
        """Constructor arguments with layer names resolved; ``depth`` builds fewer blocks (tests)."""
        out = {k: _LAYERS[v] if k in ("mlp_layer", "act_layer") else v for k, v in self.kwargs.items()}
        if depth is not None:
            out["depth"] = depth
        return out


_VIT_COMMON = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True}

FOUNDATION_MODELS: dict[str, FoundationModel] = {
    "uni": FoundationModel(
        "vit_large_patch16_224",
        {**_VIT_COMMON, "patch_size": 16},
        hub="MahmoodLab/UNI",
        patch_size=16,
        licence="CC-BY-NC-ND 4.0, gated (research, non-commercial)",
    ),
    "uni2-h": FoundationModel(
        "vit_giant_patch14_224",
        {
            **_VIT_COMMON,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "mlp_layer": "swiglu_packed",
            "act_layer": "silu",
            "reg_tokens": 8,
        },
        hub="MahmoodLab/UNI2-h",
        patch_size=14,
        licence="CC-BY-NC-ND 4.0, gated (research, non-commercial)",
    ),
    "virchow2": FoundationModel(
        "vit_huge_patch14_224",
        {**_VIT_COMMON, "mlp_ratio": 5.3375, "mlp_layer": "swiglu_packed", "act_layer": "silu", "reg_tokens": 4},
        hub="paige-ai/Virchow2",
        patch_size=14,
        licence="CC-BY-NC-ND 4.0, gated (research, non-commercial)",
    ),
    "h-optimus-0": FoundationModel(
        "vit_giant_patch14_reg4_dinov2",
        {**_VIT_COMMON, "dynamic_img_size": False},
        hub="bioptimus/H-optimus-0",
        patch_size=14,
        licence="Apache-2.0",
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        notes="fixed input size: 224 px tiles",
    ),
    "prov-gigapath": FoundationModel(
        "vit_giant_patch14_dinov2",
        {**_VIT_COMMON, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24, "mlp_ratio": 5.33334},
        hub="prov-gigapath/prov-gigapath",
        patch_size=16,
        licence="gated; see the model card's terms (research use)",
    ),
}
