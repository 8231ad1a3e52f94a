"""Test-time augmentation, batched: maps averaged over input scales and the horizontal flip.

One home for what class activation maps (stage 1's classifier) and segmenters (stage 2) share at
inference. Each scale resizes the whole batch at once and the flipped copies ride in the same
forward pass. A resized batch that fits the network's window goes through whole, padded (reflect,
bottom and right) to what the network needs; a larger one goes through overlapping windows of
that size, every window of the batch in the same forward passes: the network never sees an
input larger than the one it was trained on.

>>> import torch
>>> class Brightness(torch.nn.Module):  # two-class logits from the red channel, any input size
...     def forward(self, x):
...         return torch.cat([x[:, :1] * 0, x[:, :1]], dim=1)
>>> images = torch.rand(4, 3, 30, 30)
>>> probs = averaged_maps(Brightness(), images, scales=(0.5, 1.0, 1.5), flip=True, multiple=16)
>>> probs.shape, bool(torch.allclose(probs.sum(1), torch.ones(4, 30, 30)))
(torch.Size([4, 2, 30, 30]), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segmix.config.precision import autocast

Forward = Callable[[Tensor], Tensor]
Activation = Callable[[Tensor], Tensor]


def softmax(maps: Tensor) -> Tensor:
    """Softmax over the channels of (N, C, h, w): a segmenter's logits to probabilities."""
    return maps.softmax(dim=1)


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def window_grid(height: int, width: int, window: int, stride: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of windows covering an (height, width) image, the last flush with the edge.

    >>> list(window_grid(10, 6, 4, 3))
    [(0, 0), (0, 2), (3, 0), (3, 2), (6, 0), (6, 2)]
    """
    for y in _starts(height, window, stride):
        for x in _starts(width, window, stride):
            yield y, x


def flip_averaged(forward: Forward, x: Tensor, flip: bool = False, activation: Activation = softmax) -> Tensor:
    """``activation`` of ``forward``'s float32 output on a batch (N, 3, h, w), averaged with that of
    the horizontally flipped batch (flipped back) when ``flip``: both halves in one forward pass.

    Returns:
        float32 (N, C, h', w') at the resolution ``forward`` gives.
    """
    n = len(x)
    inputs = torch.cat([x, x.flip(-1)]) if flip else x
    out = activation(forward(inputs.contiguous(memory_format=torch.channels_last)).float())
    return (out[:n] + out[n:].flip(-1)) / 2 if flip else out


def _pad(x: Tensor, height: int, width: int) -> Tensor:
    """``x`` (B, 3, h, w) padded on the bottom and right to (height, width): reflected where the
    image is larger than the padding, else its edge repeated."""
    h, w = x.shape[-2:]
    ph, pw = height - h, width - w
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def whole_maps(
    forward: Forward, x: Tensor, flip: bool = False, activation: Activation = softmax, multiple: int = 1
) -> Tensor:
    """:func:`flip_averaged` maps of whole images (B, 3, h, w), padded to a multiple of ``multiple``
    (what the network needs: a segmenter's output stride) and cropped back.

    Returns:
        float32 (B, C, h', w'): ``forward``'s own resolution when nothing was padded, else (h, w).
    """
    h, w = x.shape[-2:]
    padded = _pad(x, -(-h // multiple) * multiple, -(-w // multiple) * multiple)
    maps = flip_averaged(forward, padded, flip, activation)
    if padded is x:
        return maps
    return _resize(maps, tuple(padded.shape[-2:]))[..., :h, :w]


def windowed_maps(
    forward: Forward,
    x: Tensor,
    window: int,
    stride: int,
    flip: bool = False,
    activation: Activation = softmax,
    batch_size: int = 32,
) -> Tensor:
    """:func:`flip_averaged` maps of images (B, 3, H, W) by overlapping ``window`` x ``window``
    windows ``stride`` apart (the last flush with the edge), averaged where they overlap; the
    windows of every image go through ``batch_size`` at a time. A side shorter than the window is
    padded (:func:`_pad`) and cropped back.

    Returns:
        float32 (B, C, H, W).
    """
    b, _, h, w = x.shape
    x = _pad(x, max(h, window), max(w, window))
    corners = list(window_grid(x.shape[-2], x.shape[-1], window, stride))
    count = x.new_zeros(1, 1, *x.shape[-2:])
    for y0, x0 in corners:
        count[..., y0 : y0 + window, x0 : x0 + window] += 1
    crops = [(i, y0, x0) for y0, x0 in corners for i in range(b)]
    total = None
    for start in range(0, len(crops), batch_size):
        part = crops[start : start + batch_size]
        batch = torch.stack([x[i, :, y0 : y0 + window, x0 : x0 + window] for i, y0, x0 in part])
        maps = _resize(flip_averaged(forward, batch, flip, activation), (window, window))
        if total is None:
            total = maps.new_zeros(b, maps.shape[1], *x.shape[-2:])
        for (i, y0, x0), m in zip(part, maps):
            total[i, :, y0 : y0 + window, x0 : x0 + window] += m
    return (total / count)[..., :h, :w]


@torch.no_grad()
def averaged_maps(
    forward: Forward,
    images: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    activation: Activation = softmax,
    window: int | None = None,
    stride: int | None = None,
    multiple: int = 1,
    precision: str | None = None,
    batch_size: int = 32,
) -> Tensor:
    """Maps of a batch of same-size images averaged over ``scales`` and the flip.

    Each scale resizes the batch (bilinear) and runs it whole (:func:`whole_maps`) when the
    resized images fit a ``window`` (or no window is given), else by windows
    (:func:`windowed_maps`); each scale's maps are resized back to the images' size before the
    mean.

    Args:
        forward: the network, (N, 3, h, w) -> (N, C, h', w') maps (a segmenter's logits at the
            input's size, a classifier's CAMs at its output stride).
        images: normalised float (B, 3, H, W).
        activation: applied to each forward's float32 output before any resizing or averaging
            (:func:`softmax` for segmenters, ``F.relu`` for CAMs).
        window, stride: resized images with a side over ``window`` go by windows ``stride`` apart.
        multiple: whole images are padded to a multiple of this (a segmenter's output stride).
        precision: the autocast of :mod:`segmix.config.precision` around the forward passes
            (None: as the caller has it).
        batch_size: images (or windows) per forward pass, the flipped copies besides.

    Returns:
        float32 (B, C, H, W).
    """
    size = tuple(images.shape[-2:])
    context = contextlib.nullcontext() if precision is None else autocast(precision, images.device.type)
    total = None
    with context:
        for factor in scales:
            x = images if factor == 1.0 else F.interpolate(images, scale_factor=factor, mode="bilinear")
            if window is None or max(x.shape[-2:]) <= window:
                maps = torch.cat([whole_maps(forward, c, flip, activation, multiple) for c in x.split(batch_size)])
            else:
                maps = windowed_maps(forward, x, window, stride or window, flip, activation, batch_size)
            maps = _resize(maps, size)
            total = maps if total is None else total + maps
    return total / len(scales)
