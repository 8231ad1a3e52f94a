"""The SegMix shuffle: pixel conservation, exact areas, targets, determinism, formats."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segmix.shuffle import SegMix
from segmix.shuffle.segmix import area_matrix, draw_sources, mix_area, mix_union


def _patch(x, b, i, j, ps):
    return x[b, :, i * ps : (i + 1) * ps, j * ps : (j + 1) * ps]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 6),
    h=st.integers(4, 23),
    w=st.integers(4, 23),
    ps=st.integers(1, 8),
    ratio=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_every_patch_comes_from_its_named_source(batch, h, w, ps, ratio, seed):
    ps = min(ps, h, w)
    x = torch.randn(batch, 2, h, w)
    y = torch.randint(0, 2, (batch, 3))
    out, targets, info = SegMix(ps, ratio)(x, y, torch.Generator().manual_seed(seed))
    gh, gw = h // ps, w // ps
    assert info.source.shape == (batch, gh, gw) and info.source.dtype == torch.long
    for b in range(batch):
        for i in range(gh):
            for j in range(gw):
                assert torch.equal(_patch(out, b, i, j, ps), _patch(x, info.source[b, i, j], i, j, ps))
    # ragged border untouched
    assert torch.equal(out[:, :, gh * ps :], x[:, :, gh * ps :])
    assert torch.equal(out[:, :, :, gw * ps :], x[:, :, :, gw * ps :])
    # exact share of positions swapped (all positions of an image move together)
    moved = (info.source != torch.arange(batch)[:, None, None]).sum().item()
    expected = round(ratio * gh * gw) * batch if batch > 1 else 0
    assert moved == expected
    torch.testing.assert_close(info.area.sum(1), torch.ones(batch))
    assert targets.shape == (batch, 3)


def test_ratio_zero_is_identity_and_ratio_one_moves_every_position():
    x = torch.randn(5, 3, 16, 16)
    y = torch.eye(5)[:, :3]
    out, t, info = SegMix(4, 0.0)(x, y)
    assert torch.equal(out, x) and torch.equal(t, y) and torch.equal(info.area, torch.eye(5))
    out, _, info = SegMix(4, 1.0)(x, y, torch.Generator().manual_seed(0))
    # every position of every image takes a patch from another image (single-cycle permutations)
    assert (info.source != torch.arange(5)[:, None, None]).all()
    # and each position's sources form a permutation of the batch
    for i in range(4):
        for j in range(4):
            assert sorted(info.source[:, i, j].tolist()) == list(range(5))


def test_area_matrix_and_targets_hand_computed():
    # 2 images of 4x6 with 2x2 patches: grid 2x3 = 6 positions of 4 px, no border
    source = torch.tensor([[[0, 1, 1], [0, 0, 0]], [[1, 0, 1], [1, 1, 0]]])
    area = area_matrix(source, 2, 4, 6)
    torch.testing.assert_close(area, torch.tensor([[4 / 6, 2 / 6], [2 / 6, 4 / 6]]))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(mix_area(area, labels), torch.tensor([[4 / 6, 2 / 6, 1.0], [2 / 6, 4 / 6, 1.0]]))
    torch.testing.assert_close(mix_union(area, labels), torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    # with a ragged border: 5x6 image, 2x2 patches -> 2x3 grid covers 24 of 30 px
    area = area_matrix(source, 2, 5, 6)
    torch.testing.assert_close(area, torch.tensor([[(16 + 6) / 30, 8 / 30], [8 / 30, (16 + 6) / 30]]))


def test_union_only_counts_contributing_images():
    area = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.0]])
    torch.testing.assert_close(mix_union(area, labels), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.3, 0.0]]))


def test_same_generator_same_result_and_cpu_generator_drives_any_device():
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 2, (8, 4))
    a = SegMix(8, 0.5)(x, y, torch.Generator().manual_seed(3))
    b = SegMix(8, 0.5)(x, y, torch.Generator().manual_seed(3))
    c = SegMix(8, 0.5)(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2].source, b[2].source)
    assert not torch.equal(a[2].source, c[2].source)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.uint8])
def test_dtype_and_channels_last_preserved_input_untouched(dtype):
    x = (torch.rand(4, 3, 24, 20) * 200).to(dtype).contiguous(memory_format=torch.channels_last)
    keep = x.clone()
    out, t, info = SegMix(8, 1.0)(x, torch.ones(4, 2), torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, keep)
    assert t.dtype == torch.float32


def test_probability_p_passes_whole_batches_through():
    x = torch.randn(4, 3, 16, 16)
    y = torch.eye(4)
    g = torch.Generator().manual_seed(0)
    applied = [SegMix(4, 1.0, p=0.5)(x, y, g)[2].applied for _ in range(200)]
    assert 60 < sum(applied) < 140
    out, t, info = SegMix(4, 1.0, p=0.0)(x, y, g)
    assert out is x and not info.applied and torch.equal(t, y)


def test_works_under_autocast():
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, t, _ = SegMix(4, 0.5)(x, torch.ones(4, 2), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and t.dtype == torch.float32


def test_cell_labels_give_each_patch_its_source_label():
    x = torch.randn(3, 1, 8, 8)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _, _, info = SegMix(4, 1.0)(x, y, torch.Generator().manual_seed(0))
    cells = info.cell_labels(y)
    assert cells.shape == (3, 2, 2, 2)
    assert torch.equal(cells[1, 0, 1], y[info.source[1, 0, 1]])


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="label_mix"):
        SegMix(label_mix="max")
    with pytest.raises(ValueError, match="ratio"):
        SegMix(ratio=1.5)
    with pytest.raises(ValueError, match="exceeds the image size"):
        SegMix(32)(torch.zeros(2, 3, 16, 16), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\)"):
        SegMix(4)(torch.zeros(2, 16, 16), torch.ones(2, 2))


def test_draw_sources_batch_of_one_never_moves():
    assert torch.equal(draw_sources(1, 9, 1.0), torch.zeros(1, 9, dtype=torch.long))
