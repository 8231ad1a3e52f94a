"""CAM classifier, local weights loading, augmentations, glass detection, CAM gating."""

import numpy as np
import pytest
import timm
import torch

from segmix.data.synth import SynthConfig, render_tile
from segmix.data.tissue import tissue_mask
from segmix.models import CamClassifier, load_backbone_weights
from segmix.pseudo import class_activation_maps, pseudo_masks
from segmix.train.augment import dihedral, hed_jitter


def test_avg_pool_logits_are_the_mean_of_the_class_maps():
    m = CamClassifier("resnet18", 3, output_stride=16).eval()
    logits, maps = m(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 3, 4, 4)
    torch.testing.assert_close(logits, maps.mean(dim=(2, 3)))
    # CAMs are the maps without the head bias
    torch.testing.assert_close(
        m.cams(torch.zeros(1, 3, 64, 64)) + m.head.bias.view(1, 3, 1, 1), m.class_maps(torch.zeros(1, 3, 64, 64))
    )


def test_weights_with_foreign_names_map_in_order(tmp_path):
    full = timm.create_model("resnet18", pretrained=False)
    renamed = {f"w{i:04d}": v.clone() + 1.0 for i, v in enumerate(full.state_dict().values())}
    path = tmp_path / "foreign.pth"
    torch.save(renamed, path)
    m = CamClassifier("resnet18", 2, weights=path)
    loaded = m.encoder.state_dict()["conv1.weight"]
    torch.testing.assert_close(loaded, full.state_dict()["conv1.weight"] + 1.0)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"a": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not the weights of resnet18"):
        CamClassifier("resnet18", 2, weights=path)
    with pytest.raises(FileNotFoundError):
        CamClassifier("resnet18", 2, weights=tmp_path / "missing.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(ValueError, match="refused"):
        load_backbone_weights(CamClassifier("resnet18", 2).encoder, "resnet18", path)


def test_dihedral_keeps_pixels_and_hed_jitter_is_mild():
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = dihedral(x, g)
    for a, b in zip(x, y):
        torch.testing.assert_close(a.flatten().sort().values, b.flatten().sort().values)
    assert torch.equal(hed_jitter(x, 0.0), x)
    z = hed_jitter(x.clamp(0.2, 1), 0.05, g)
    assert z.shape == x.shape and (z - x.clamp(0.2, 1)).abs().max() < 0.2 and not torch.equal(z, x.clamp(0.2, 1))


def test_tissue_mask_finds_synthetic_glass():
    cfg = SynthConfig(tile_size=96, glass_prob=1.0)
    for seed in range(5):
        image, mask = render_tile(np.random.default_rng(seed), cfg)
        t = tissue_mask(image)
        truth = mask != 4
        assert (t == truth).mean() > 0.97


def test_gating_never_emits_absent_classes_and_background_policy():
    cams = torch.rand(4, 3, 10, 10)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    m = pseudo_masks(cams, labels)
    for b in range(4):
        assert set(m[b].unique().tolist()) <= set(labels[b].nonzero().flatten().tolist())
    assert (m[0] == 0).all()
    tissue = torch.ones(4, 10, 10, dtype=torch.bool)
    tissue[:, :5] = False
    m = pseudo_masks(cams, labels, tissue, background_index=3, margin=0.5)
    assert (m[:, :5] == 3).all() and set(m[:, 5:].unique().tolist()) <= {0, 1, 2, 255}
    with pytest.raises(ValueError, match="at least one class"):
        pseudo_masks(cams, torch.zeros(4, 3))


def test_cams_are_normalised_per_class():
    m = CamClassifier("resnet18", 2, output_stride=16).eval()
    cams = class_activation_maps(m, torch.rand(2, 3, 64, 64), scales=(1.0, 1.5), flip=True)
    assert cams.shape == (2, 2, 64, 64) and cams.min() >= 0
    peaks = cams.flatten(2).amax(2)
    assert ((peaks - 1).abs() < 1e-4).logical_or(peaks == 0).all()


def test_model_files_of_the_flat_config_layout_still_load(tmp_path):
    from segmix.models import load_classifier, save_payload

    model = CamClassifier("resnet18", 2, output_stride=16)
    flat = {
        "backbone": "resnet18",
        "image_size": 64,
        "epochs": 3,
        "p": 0.5,
        "cell_loss": 0.0,
        "signal": "val_f1",
        "curriculum": {"advance": 0.1},
    }
    save_payload({"state_dict": model.state_dict(), "config": flat, "classes": ["A", "B"]}, tmp_path / "old.pt")
    loaded, cfg, classes = load_classifier(tmp_path / "old.pt")
    assert classes == ["A", "B"] and cfg.train.image_size == 64 and cfg.train.epochs == 3
    assert cfg.mixing.probability == 0.5 and cfg.loss.patch_cam_weight == 0.0
    assert cfg.curriculum.signal == "val_f1" and cfg.curriculum.knobs("loss")["advance"] == 0.1
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])


def test_model_files_of_the_layout_before_the_registry_still_load(tmp_path):
    from segmix.models import load_classifier, save_payload

    model = CamClassifier("resnet18", 2, output_stride=16)
    old = {
        "train": {"image_size": 64},
        "mixing": {"method": "segmix", "label_mix": "area", "alpha": 0.4, "replay": 0.0},
        "ladder": {"fixed_level": 2},
        "curriculum": {"mastery": 0.8, "patience": 2, "drop": 0.03, "warmup": 1, "probe": "swapped"},
    }
    old["curriculum"]["plugged"] = {"leap": 2}  # a plug-in's knobs, from a process that had it registered
    save_payload({"state_dict": model.state_dict(), "config": old, "classes": ["A", "B"]}, tmp_path / "old.pt")
    _, cfg, _ = load_classifier(tmp_path / "old.pt")
    assert cfg.mixing.knobs("segmix") == {"label_mix": "area"}
    assert cfg.mixing.knobs("cutmix") == cfg.mixing.knobs("mixup") == {"alpha": 0.4}
    assert cfg.curriculum.knobs("fixed") == {"level": 2} and cfg.curriculum.probe == "swapped"
    assert "plugged" not in cfg.model_dump()["curriculum"]  # not registered here: dropped
    mastery, gain = cfg.curriculum.knobs("mastery"), cfg.curriculum.knobs("gain")
    assert (mastery["mastery"], mastery["warmup"], "patience" in mastery) == (0.8, 1, False)  # removed since: dropped
    assert (gain["drop"], gain["warmup"], "patience" in gain, cfg.curriculum.knobs("loss")["warmup"]) == (
        0.03,
        1,
        False,
        1,
    )
