"""The random streams of a run: each consumer draws its own numbers."""

import torch

from segmix.train.data import EpochShuffle, seeded_generator, stream_seed
from segmix.train.runtime import step_generator


def _first(g: torch.Generator) -> tuple[float, ...]:
    return tuple(torch.rand(4, generator=g).tolist())


def test_no_two_consumers_share_a_stream():
    draws = {}
    for seed in range(3):
        for epoch in range(16):
            sampler = EpochShuffle(1000, seed)
            sampler.set_epoch(epoch)
            draws[("epoch", seed, epoch)] = tuple(list(sampler)[:8])
        for step in range(16):
            for rank in range(8):
                g = step_generator(seed, step, rank)
                draws[("global", seed, step, rank)] = _first(torch.default_generator)
                draws[("step", seed, step, rank)] = _first(g)
        for index in range(16):
            draws[("probe", seed, index)] = _first(seeded_generator(seed, "probe", index))
        draws[("holdout", seed)] = _first(seeded_generator(seed, "holdout"))
    assert len(set(draws.values())) == len(draws)
    # the collision arithmetic offsets had: epoch e of the order and step 0 / rank e
    assert stream_seed(0, "epoch-order", 3) != stream_seed(0, "step", 0, 3)


def test_a_stream_is_the_same_in_every_process():
    a, b = seeded_generator(7, "step", 5, 1), seeded_generator(7, "step", 5, 1)
    assert _first(a) == _first(b) and 0 <= stream_seed(7, "step", 5, 1) < 2**63
