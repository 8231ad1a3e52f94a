"""Pathology foundation models built from their recipes (:mod:`segmix.config.foundation`).

``backbone: uni2-h`` builds the network its model card describes; ``pretrained: true`` fetches
the weights from the Hugging Face hub (internet, an accepted licence and a token needed),
``weights: FILE`` loads the model card's ``pytorch_model.bin`` / ``model.safetensors`` from disk.
Nothing here downloads unless ``pretrained`` is set.

>>> encoder = create_foundation_encoder("uni", weights="/models/uni/pytorch_model.bin")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import timm
from timm.models import register_model
from torch import nn

from segmix.config.foundation import FOUNDATION_MODELS, FoundationModel
from segmix.errors import ModelFileError
from segmix.models.weights import hub_weights, load_state_dict

__all__ = [
    "FOUNDATION_MODELS",
    "FoundationModel",
    "create_foundation_encoder",
    "load_foundation_weights",
    "timm_name",
]


def timm_name(name: str) -> str:
    """The timm model name under which the recipe ``name`` is built: ``segmix_<name>``.

    Registered with timm on first use, so anything that builds timm models by name (timm's
    ``features_only``, smp's ``tu-`` encoders) builds the recipe: its constructor arguments are
    the defaults, and arguments given at creation override them.
    """
    registered = "segmix_" + name.replace("-", "_")
    if not timm.is_model(registered):
        recipe = FOUNDATION_MODELS[name]

        def build(pretrained: bool = False, **kwargs) -> nn.Module:
            return timm.create_model(recipe.arch, pretrained=pretrained, **{**recipe.timm_kwargs(), **kwargs})

        build.__name__ = registered
        register_model(build)
    return registered


def create_foundation_encoder(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    depth: int | None = None,
    features_only: bool = True,
) -> nn.Module:
    """The foundation model ``name`` as a timm ``features_only`` encoder (last block's tokens as a
    (B, C, H / patch, W / patch) map; class and register tokens dropped by timm).

    Args:
        pretrained: load the hub weights (``hf-hub:<hub>``; internet, licence, token).
        weights: a local ``pytorch_model.bin`` / ``.safetensors`` of the model card, loaded
            ``weights_only``; every tensor of the encoder must be found in it.
        depth: build fewer blocks than the recipe (tests on a CPU); the recipe is otherwise used
            as it is.
    """
    recipe = FOUNDATION_MODELS[name]
    extra: dict = {"features_only": True, "out_indices": (-1,)} if features_only else {}
    if depth is not None:
        extra["depth"] = depth
    if pretrained:  # the hub's config names the architecture; the recipe adds the layer classes
        with hub_weights("model.pretrained", name):
            encoder = timm.create_model(f"hf-hub:{recipe.hub}", pretrained=True, **recipe.timm_kwargs(), **extra)
    else:
        encoder = timm.create_model(timm_name(name), **extra)
    if weights:
        load_foundation_weights(encoder, name, weights)
    return encoder


def load_foundation_weights(encoder: nn.Module, name: str, path: str | Path) -> int:
    """Copy a model card's weights file into an encoder built by :func:`create_foundation_encoder`.

    The file holds the full model's tensors (``blocks.0...``); a ``features_only`` encoder names
    them ``model.blocks.0...``. Tensors the encoder does not use (the final norm, a head) are left
    out; a tensor of the encoder missing from the file, or of another shape, is an error.
    """
    state = load_state_dict(path)
    target = encoder.state_dict()
    prefix = "model." if all(k.startswith("model.") for k in target) else ""
    renamed = {prefix + k: v for k, v in state.items()}
    missing = [k for k in target if k not in renamed]
    wrong = [k for k in target if k in renamed and renamed[k].shape != target[k].shape]
    if missing or wrong:
        bad = (missing + wrong)[:3]
        raise ModelFileError(
            f"{path}: not the weights of {name} ({len(missing)} tensors missing, {len(wrong)} of another shape, "
            f"e.g. {', '.join(bad)}); expected the {FOUNDATION_MODELS[name].weights_file} of "
            f"huggingface.co/{FOUNDATION_MODELS[name].hub}"
        )
    encoder.load_state_dict({k: renamed[k] for k in target})
    return len(target)
