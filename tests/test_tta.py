"""Batched test-time augmentation (segmix.models.tta): the batch, the flip in the same pass, the
padding to the network's multiple and the windows give the maps of one image at a time."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segmix.config import Stage2Config
from segmix.models import create_segmenter, segment_probs
from segmix.models.segmenter import input_multiple
from segmix.models.tta import averaged_maps, flip_averaged, whole_maps, windowed_maps


class Pixelwise(torch.nn.Module):
    """A 1x1 convolution: each output pixel depends on its input pixel alone, so padding, windows
    and batching must not change any map; refuses sides that are not a multiple of ``multiple``."""

    def __init__(self, multiple: int = 1) -> None:
        super().__init__()
        self.multiple = multiple
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.batches: list[int] = []

    def forward(self, x):
        assert x.shape[-2] % self.multiple == 0 and x.shape[-1] % self.multiple == 0, x.shape
        self.batches.append(len(x))
        return self.conv(x)


class LeftRight(torch.nn.Module):
    """Logits that depend on the column: the flip shows."""

    def forward(self, x):
        col = torch.linspace(-1, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([col, -col], dim=1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_the_flip_rides_in_the_same_forward_pass():
    model, x = LeftRight(), torch.rand(3, 3, 8, 10)
    two = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(flip_averaged(model, x, flip=True), two)
    counted = Pixelwise()
    flip_averaged(counted, x, flip=True)
    assert counted.batches == [6]  # one pass of both halves


def test_padding_to_the_networks_multiple_is_cropped_back():
    model, x = Pixelwise(multiple=16), torch.rand(2, 3, 40, 56)
    padded = whole_maps(model, x, flip=True, multiple=16)
    assert padded.shape == (2, 4, 40, 56)
    free = Pixelwise(multiple=1)
    free.conv = model.conv
    torch.testing.assert_close(padded, flip_averaged(free, x, flip=True))
    with pytest.raises(AssertionError):
        whole_maps(model, x)  # without the padding the network refuses the size


def test_a_batch_gives_each_images_own_maps_at_every_scale():
    model, x = Pixelwise(multiple=16), torch.rand(5, 3, 64, 64)
    together = averaged_maps(model, x, (0.5, 0.75, 1.0, 1.5), flip=True, window=64, multiple=16, batch_size=4)
    alone = torch.cat([averaged_maps(model, x[i : i + 1], (0.5, 0.75, 1.0, 1.5), True, multiple=16) for i in range(5)])
    torch.testing.assert_close(together, alone)
    assert together.shape == (5, 4, 64, 64)


def test_images_larger_than_a_window_go_by_batched_windows():
    model, x = Pixelwise(), torch.rand(2, 3, 50, 37)
    windows = averaged_maps(model, x, flip=True, window=16, stride=8, batch_size=7)
    assert max(model.batches) == 14  # seven windows and their flips per pass
    torch.testing.assert_close(windows, flip_averaged(model, x), atol=1e-5, rtol=1e-5)
    # with a neighbourhood, a window is the network's whole input
    blur = torch.nn.Conv2d(3, 2, 3, padding=1)
    solo = windowed_maps(blur, x[:, :, :16, :16], window=16, stride=8, activation=lambda m: m)
    torch.testing.assert_close(solo, blur(x[:, :, :16, :16]))


def test_cam_like_maps_at_the_output_stride_are_resized_to_the_image():
    class Strided(torch.nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x[:, :2], 8)

    maps = averaged_maps(Strided(), torch.rand(2, 3, 64, 64), (1.0, 1.5), flip=True, activation=F.relu)
    assert maps.shape == (2, 2, 64, 64) and maps.min() >= 0


def test_segmenter_probabilities_of_tiles_with_scales_need_no_window():
    model = create_segmenter("auto", "resnet18", 3).eval()
    assert input_multiple(model) == 16
    cfg = Stage2Config(train={"image_size": 64}, precision="32")
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    batched = segment_probs(model, tiles, cfg, "cpu", 3, scales=(0.5, 0.75, 1.0, 1.25))
    for tile, probs in zip(tiles, batched):
        alone = segment_probs(model, [tile], cfg, "cpu", 3, scales=(0.5, 0.75, 1.0, 1.25))[0]
        torch.testing.assert_close(probs, alone, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(probs.sum(0), torch.ones(64, 64))
