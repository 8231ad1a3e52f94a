"""Stage 2's pixel loss: generalized cross-entropy on pseudo masks, cross-entropy on truth."""

import pytest
import torch
import torch.nn.functional as F

from segmix.data.io import IGNORE_INDEX
from segmix.data.spec import PRESETS
from segmix.train import Stage2Config
from segmix.train.pixel_loss import pixel_loss
from segmix.train.stage2 import Stage2Module


def _pixels(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    target[0, :2] = IGNORE_INDEX
    return logits, target


@pytest.mark.parametrize("q", [0.4, 0.7, 1.0])
def test_gce_scales_each_pixels_cross_entropy_gradient_by_p_y_to_the_q(q):
    logits, target = _pixels()
    ce = pixel_loss(logits, target, "ce")
    p_y = (-ce).exp().detach()  # 1 on ignored pixels, whose loss is 0 in both
    grad_ce = torch.autograd.grad((ce * p_y**q).sum(), logits)[0]
    grad_gce = torch.autograd.grad(pixel_loss(logits, target, "gce", q).sum(), logits)[0]
    assert torch.allclose(grad_gce, grad_ce, atol=1e-6)
    assert grad_gce[0, :, :2].abs().max() == 0  # ignored pixels pull nothing


def test_ce_is_torchs_and_gce_tends_to_it_as_q_vanishes():
    logits, target = _pixels(1)
    ce = pixel_loss(logits, target, "ce")
    assert torch.allclose(ce, F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none"))
    assert torch.allclose(pixel_loss(logits, target, "gce", q=1e-4), ce, atol=1e-3)
    with pytest.raises(ValueError, match="known: ce, gce"):
        pixel_loss(logits, target, "focal")


def test_true_masks_train_with_cross_entropy_whatever_the_pseudo_mask_loss():
    cfg = Stage2Config.model_validate({"loss": {"pseudo": "gce"}}).model_dump(mode="json")
    spec = PRESETS["luad-histoseg"].model_dump(mode="json")
    assert Stage2Module(cfg, spec).loss_kind == "gce"
    assert Stage2Module(cfg, spec, truth=True).loss_kind == "ce"
    with pytest.raises(ValueError, match="pseudo"):
        Stage2Config.model_validate({"loss": {"pseudo": "focal"}})
