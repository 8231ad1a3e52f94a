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
    """A timm model name (or a Hugging Face hub name, checked when it is built)."""
    import timm

    if name.startswith(HUB_PREFIXES) or timm.is_model(name):
        return name
    raise _unknown("timm model", name, timm.list_models())


def check_segmenter_arch(arch: str) -> str:
    """An smp architecture name, in any letter case (``DeepLabV3Plus``, ``unet``...)."""
    import segmentation_models_pytorch as smp

    known = list(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() in known:
        return arch
    names = [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    raise _unknown("smp architecture", arch, names)


def check_encoder(name: str) -> str:
    """An smp encoder name, or ``tu-<timm model>``."""
    import segmentation_models_pytorch as smp

    if name.startswith("tu-"):
        check_backbone(name[3:])
        return name
    known = smp.encoders.get_encoder_names()
    if name in known:
        return name
    raise _unknown("smp encoder (or tu-<timm model>)", name, known)
