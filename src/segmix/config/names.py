"""Checks of model names given in configs, before any folder is made or weights are read.

A typo in ``backbone`` or ``encoder`` would otherwise surface deep inside timm / smp, after a
run folder was created; here it is refused at config time with the closest known names.
"""

from __future__ import annotations

import difflib

HUB_PREFIXES = ("hf-hub:", "hf_hub:", "timm/")


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint}")


def check_backbone(name: str) -> str:
    """A foundation model of :data:`~segmix.config.foundation.FOUNDATION_MODELS`, a timm model name,
    or a Hugging Face hub name (checked when it is built)."""
    import timm

    from segmix.config.foundation import FOUNDATION_MODELS

    if name in FOUNDATION_MODELS or name.startswith(HUB_PREFIXES) or timm.is_model(name):
        return name
    raise _unknown("timm model", name, [*FOUNDATION_MODELS, *timm.list_models()])


def check_segmenter_arch(arch: str) -> str:
    """An smp architecture name, in any letter case (``DeepLabV3Plus``, ``unet``...), or ``auto``."""
    import segmentation_models_pytorch as smp

    known = list(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() in known or arch == "auto":
        return arch
    names = [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    raise _unknown("smp architecture", arch, names)


def check_encoder(name: str) -> str:
    """An smp encoder name, ``tu-<timm model>``, or a foundation model."""
    import segmentation_models_pytorch as smp

    from segmix.config.foundation import FOUNDATION_MODELS

    if name in FOUNDATION_MODELS:
        return name
    if name.startswith("tu-"):
        check_backbone(name[3:])
        return name
    known = smp.encoders.get_encoder_names()
    if name in known:
        return name
    raise _unknown("smp encoder (or tu-<timm model>)", name, known)


# timm modules whose models are plain vision transformers: a token grid at the patch size, no
# output_stride; finer maps come from a larger input (their position embeddings interpolate).
TOKEN_MODULES = ("vision_transformer", "deit", "eva")


def is_token_backbone(backbone: str) -> bool:
    """Whether ``backbone`` is a vision transformer (a foundation model or a timm ViT)."""
    import timm

    from segmix.config.foundation import FOUNDATION_MODELS

    if backbone in FOUNDATION_MODELS:
        return True
    return any(backbone in timm.list_models(module=m) for m in TOKEN_MODULES)


def segmenter_arch(arch: str, encoder: str) -> str:
    """The smp architecture stage 2 builds for ``encoder``: ``auto`` is DPT for a vision
    transformer and DeepLabV3Plus otherwise; a vision transformer with another decoder (which needs
    a feature pyramid) raises ValueError."""
    vit = is_token_backbone(encoder[3:] if encoder.startswith("tu-") else encoder)
    if arch.lower() == "auto":
        return "DPT" if vit else "DeepLabV3Plus"
    if vit and arch.lower() != "dpt":
        raise ValueError(f"{encoder} is a vision transformer: use arch DPT (or auto), not {arch}")
    return arch
