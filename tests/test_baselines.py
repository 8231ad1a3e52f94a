"""CutMix / MixUp through timm, and the method registry."""

import pytest
import torch

from segmix.shuffle import METHODS, TimmMix, build_levels, create_method


@pytest.mark.parametrize("mode", ["cutmix", "mixup"])
def test_timm_mix_targets_equal_area_times_labels(mode):
    x = torch.rand(6, 3, 32, 32)
    y = torch.randint(0, 2, (6, 4)).float()
    out, t, info = TimmMix(mode)(x, y, torch.Generator().manual_seed(1))
    torch.testing.assert_close(info.area.sum(1), torch.ones(6))
    torch.testing.assert_close(t, info.area @ y)
    # timm pairs i with B-1-i
    lam = info.area[0, 0]
    assert info.area[0, 5] == pytest.approx(1 - lam.item(), abs=1e-6)
    if mode == "cutmix":
        # pixels either kept or copied from the partner, and their share is the area
        from_partner = (out[0] != x[0]).any(0).float().mean()
        assert from_partner == pytest.approx(1 - lam.item(), abs=0.02)
    else:
        torch.testing.assert_close(out[0], lam * x[0] + (1 - lam) * x[5])


def test_timm_mix_is_seeded_by_generator_and_restores_numpy_state():
    import numpy as np

    x = torch.rand(4, 3, 16, 16)
    y = torch.eye(4)
    np.random.seed(5)
    a = TimmMix("cutmix")(x, y, torch.Generator().manual_seed(0))
    after = np.random.rand()
    np.random.seed(5)
    b = TimmMix("cutmix")(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and np.random.rand() == after


def test_odd_batch_leaves_last_image():
    x = torch.rand(5, 3, 16, 16)
    out, t, info = TimmMix("mixup")(x, torch.eye(5), torch.Generator().manual_seed(0))
    assert torch.equal(out[4], x[4]) and info.area[4, 4] == 1


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_builds_and_mixes(name):
    levels = build_levels([16, 8], 0.25, 0.5)
    mixer, cur = create_method(name, levels=levels, total_steps=4)
    x = torch.rand(4, 3, 32, 32)
    out, t, info = mixer(x, torch.eye(4)[:, :3], torch.Generator().manual_seed(0))
    assert out.shape == x.shape and t.shape == (4, 3)
    assert (cur is None) == (METHODS[name].curriculum is None)


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="known: none, cutmix"):
        create_method("mosaic")


def test_factories_refuse_unknown_arguments_and_list_the_known_ones():
    from segmix.shuffle import Mixer, NoMix, SegMix, create_curriculum, create_mixer

    with pytest.raises(ValueError, match=r"mixer 'segmix': unknown knob\(s\) patchsize; known: label_mix"):
        create_method("segmix", build_levels([56], 0.25, 0.5), mixer={"patchsize": 16})
    with pytest.raises(ValueError, match=r"mixer 'cutmix': unknown knob\(s\) patch_size; known: alpha"):
        create_mixer("cutmix", patch_size=8)
    with pytest.raises(ValueError, match="has no curriculum"):
        create_method("none", None, curriculum={"level": 0})
    with pytest.raises(ValueError, match=r"warmup_of; known: warmup, warmup_off, mode, advance"):
        create_curriculum("loss", SegMix(), build_levels([56], 0.25, 0.5), warmup_of=True)
    with pytest.raises(ValueError, match="unknown mixer 'segmx'; known: segmix, none, cutmix, mixup"):
        create_mixer("segmx")
    with pytest.raises(ValueError, match="cuts a patch grid"):
        create_mixer("segmix")
    with pytest.raises(ValueError, match="needs total_steps"):
        create_method("shuffle-scheduled", build_levels([56], 0.25, 0.5))
    with pytest.raises(ValueError, match="label_mix: .*unknown label_mix 'max'; known: area, union"):
        create_mixer("segmix", level=build_levels([56], 0.25, 0.5)[0], label_mix="max")
    levels = build_levels([56], 0.25, 0.5)
    assert all(isinstance(create_method(m, levels, total_steps=4)[0], Mixer) for m in METHODS)
    assert isinstance(NoMix(), Mixer) and not isinstance(object(), Mixer)
