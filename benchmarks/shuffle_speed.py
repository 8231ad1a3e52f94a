"""Speed of the SegMix shuffle against the memory-copy floor, CellMix and a training step.

Rows: batch shape x patch size, ratio 0.5 (CellMix: ``fix_position_ratio=0.5``, the same share
moved). Columns, median milliseconds per batch over ``--repeats`` calls after a warm-up:

- ``clone``: ``x.clone()``, the memory-copy floor;
- ``segmix``: ``SegMix(patch_size, 0.5)`` (input NCHW; ``segmix (cl)`` channels_last);
- ``cellmix``: PyPI ``cellmix`` 0.1.7, ``get_online_augmentation("CellMix")``;
- ``train step``: one resnet18 forward + backward + SGD step, channels_last, ``precision: auto`` as in training.

Also printed: distinct source images per mixed image (per-position permutations).
Needs the ``bench`` extra: ``pip install -e '.[bench]'``. Run: ``python benchmarks/shuffle_speed.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segmix.config.precision import autocast
from segmix.shuffle import SegMix


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def train_step_ms(x: torch.Tensor, repeats: int) -> float:
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=4).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    xc = x.contiguous(memory_format=torch.channels_last)
    y = torch.rand(x.shape[0], 4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast("auto", "cpu"):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xc).float(), y)
        loss.backward()
        opt.step()

    return median_ms(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-repeats", type=int, default=3)
    args = ap.parse_args()
    from CellMix import get_online_augmentation

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ratio 0.5\n")
    print(
        "| batch | patch | clone ms | segmix ms | segmix (cl) ms | cellmix ms | train step ms | "
        "segmix / clone | cellmix / segmix | segmix / step | sources per image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for b, edge in ((32, 224), (64, 112)):
        x = torch.rand(b, 3, edge, edge)
        xcl = x.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 4, (b,))
        multi = torch.nn.functional.one_hot(labels, 4).float()
        step = train_step_ms(x, args.train_repeats)
        for ps in (112, 56, 16):
            mixer = SegMix(ps, 0.5)
            g = torch.Generator().manual_seed(0)
            clone = median_ms(lambda: x.clone(), args.repeats)
            ours = median_ms(lambda: mixer(x, multi, g), args.repeats)
            ours_cl = median_ms(lambda: mixer(xcl, multi, g), args.repeats)
            cell = get_online_augmentation("CellMix", p=1.0, class_num=4, batch_size=b, edge_size=edge, device="cpu")
            cm = median_ms(lambda: cell(x, labels, fix_position_ratio=0.5, puzzle_patch_size=ps), args.repeats)
            src = mixer(x, multi, g)[2].source
            distinct = statistics.mean(len(set(s.flatten().tolist())) for s in src)
            print(
                f"| {b}x3x{edge}x{edge} | {ps} | {clone:.2f} | {ours:.2f} | {ours_cl:.2f} | {cm:.2f} | {step:.0f} | "
                f"{ours / clone:.2f} | {cm / ours:.1f} | {ours / step:.2%} | {distinct:.1f} |"
            )


if __name__ == "__main__":
    main()
