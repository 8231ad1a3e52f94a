"""Stage-2 mosaics (masks move with their pixels, exact single-label cells) and CAM refinement."""

import csv
import logging

import numpy as np
import pytest
import torch

from segmix.cam.refine import pixel_affinity, refine_cams
from segmix.data.io import IGNORE_INDEX
from segmix.shuffle.segmix import SegMix
from segmix.train.mosaic import exact_single_label, mosaic_batch

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def _batch(seed: int, b: int = 6, size: int = 30, k: int = 3):
    """Images whose channel 0 encodes the mask pixel by pixel and channel 1 the tile's index."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, k, (b, size, size), generator=g)
    masks[0, :3, :3] = IGNORE_INDEX
    images = torch.stack([masks.float(), torch.arange(b).float()[:, None, None].expand(b, size, size)], dim=1)
    labels = (torch.rand(b, k, generator=g) < 0.5).float()
    labels[torch.arange(b), torch.randint(0, k, (b,), generator=g)] = 1.0
    labels[1] = torch.tensor([0.0, 1.0, 0.0])  # at least one single-label tile
    return images, masks, labels


@pytest.mark.parametrize("patch", [4, 7, 10])
def test_masks_travel_with_their_pixels_and_weights_mark_single_label_sources(patch):
    images, masks, labels = _batch(patch)
    g = torch.Generator().manual_seed(1)
    x, m, w, mixed_labels = mosaic_batch(SegMix(patch, ratio=0.6), images, masks, labels, 2.5, g)
    assert torch.equal(x[:, 0].long(), m)  # the mask of every pixel is the one drawn for it
    source = x[:, 1].long()
    assert (source != torch.arange(6)[:, None, None]).any()  # something moved
    single = (labels > 0.5).sum(1) == 1
    expected = torch.where(single[source], 2.5, 1.0) * (m != IGNORE_INDEX)
    assert torch.equal(w, expected)
    present = torch.zeros(6, 3)
    for b in range(6):
        present[b] = labels[source[b].unique()].amax(0)
    assert torch.equal(mixed_labels, present)  # every class of a source of the image
    if 30 % patch:  # the ragged border stays home
        assert torch.equal(source[:, -1, -1], torch.arange(6))


def test_unshuffled_batch_keeps_masks_and_still_weights():
    images, masks, labels = _batch(0)
    x, m, w, _ = mosaic_batch(SegMix(5, ratio=0.5, p=0.0), images, masks, labels, 3.0)
    assert torch.equal(x, images) and torch.equal(m, masks)
    assert torch.equal(w[1], torch.full((30, 30), 3.0)) and w[0, 0, 0] == 0


def test_exact_single_label_keeps_glass_and_multi_label_tiles():
    masks = torch.tensor([[[0, 1, 2, 255]], [[0, 1, 2, 255]], [[0, 1, 2, 255]]])
    labels = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    out = exact_single_label(masks, labels, background_index=2)
    assert out.tolist() == [[[1, 1, 2, 1]], [[0, 1, 2, 255]], [[0, 0, 2, 0]]]
    assert exact_single_label(masks, labels, None)[0].tolist() == [[1, 1, 1, 1]]


def test_affinity_sums_to_one_and_prefers_like_colours():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 20, 24, generator=g)
    w = pixel_affinity(img)
    assert w.shape == (2, 32, 20, 24) and torch.allclose(w.sum(1), torch.ones(2, 20, 24), atol=1e-5)
    two = torch.zeros(1, 3, 20, 20)
    two[..., 10:] = 1.0
    w = pixel_affinity(two + 0.01 * torch.rand(1, 3, 20, 20, generator=g), dilations=(1,))
    # pixel (5, 9) on the dark side: its right neighbour (offset (0, +1), index 4) is bright
    assert w[0, 4, 5, 9] < 0.01 < w[0, 3, 5, 9]


def test_refinement_pulls_activation_back_inside_the_region_and_zero_steps_is_identity():
    g = torch.Generator().manual_seed(3)
    img = torch.zeros(1, 3, 32, 32)
    img[:, :, 8:24, 8:24] = 1.0  # a bright square on a dark ground
    img += 0.03 * torch.rand(img.shape, generator=g)
    cam = torch.zeros(1, 2, 32, 32)
    cam[:, 0, 4:28, 4:28] = 1.0  # class 0's CAM: the square blurred 4 px outwards
    cam[:, 1] = 1 - cam[:, 0]
    assert torch.equal(refine_cams(cam, img, steps=0), cam)
    out = refine_cams(cam, img, steps=10)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 8:24] = True
    before = ((cam[0, 0] > cam[0, 1]) == inside).float().mean()
    after = ((out[0, 0] > out[0, 1]) == inside).float().mean()
    assert before < 0.7 and after > 0.95
    assert out.shape == cam.shape and float(out.amax()) == pytest.approx(1.0)


@pytest.mark.slow
def test_stage2_trains_on_mosaics_with_exact_cells_and_an_ema_teacher(tmp_path):
    from segmix.data.synth import SynthConfig, generate
    from segmix.models import load_segmenter
    from segmix.train import Stage2Config, train_segmenter

    root = tmp_path / "d"
    generate(SynthConfig(n_train=16, n_val=3, n_test=2, tile_size=64, seed=5), root, workers=1)
    mixing = {"method": "shuffle", "patch_size": 16, "single_share": 0.25, "exact_weight": 2.0}
    cfg = Stage2Config(
        model={"encoder": "resnet18"},
        train={"image_size": 64, "batch_size": 8, "epochs": 2},
        mixing=mixing,
        self_training={"start": 1, "confidence": 0.55},
        num_workers=0,
    )
    path = train_segmenter(cfg, root, root / "train_gt", tmp_path / "s2", progress=False)
    saved = load_segmenter(path).config
    assert saved.mixing.method == "shuffle" and saved.mixing.exact_weight == 2.0
    rows = list(csv.DictReader(next((tmp_path / "s2" / "logs").rglob("metrics.csv")).open()))
    relabelled = [float(r["train/relabelled"]) for r in rows if r.get("train/relabelled")]
    assert len(relabelled) == 1 and 0 <= relabelled[0] <= 1  # the teacher relabels from epoch 1 only


def test_cells_larger_than_the_tile_are_refused():
    from pydantic import ValidationError

    from segmix.train import Stage2Config

    with pytest.raises(ValidationError, match="mixing.patch_size 128 exceeds train.image_size 112"):
        Stage2Config(mixing={"method": "shuffle", "patch_size": 128})
    assert Stage2Config(mixing={"patch_size": 128}).mixing.method == "none"  # unused cells are not checked
    assert np.isfinite(Stage2Config().mixing.exact_weight)
