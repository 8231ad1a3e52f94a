"""Stage-1 training throughput and peak memory of a ViT classifier, frozen vs fine-tuned.

    python benchmarks/vit_stage1_speed.py [--backbone vit_small_patch16_224] [--size 224] [--batch 16]

Each setting runs in its own process (so peak memory is its own): ``trainable_blocks`` null
(everything trains), 4 (head + last 4 blocks) and 0 (head only, frozen backbone); a training
step is the classifier's forward, BCE on its image logits, backward and an AdamW step, at
``precision: auto`` as in stage 1. Prints a table: images/s and peak memory (GPU: max allocated; CPU: RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(backbone: str, size: int, batch: int, trainable: int | None, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from segmix.config.precision import autocast
    from segmix.models import CamClassifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = CamClassifier(backbone, 4).to(device)
    model.freeze(trainable)
    opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-5))
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch, 4), device=device).float()

    def step():
        with autocast("auto", device.type):
            logits, _ = model(model.normalize(x))
        F.binary_cross_entropy_with_logits(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    seconds = time.perf_counter() - t0
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "img_per_s": batch * steps / seconds,
        "peak_gib": peak,
        "trained_params_m": trained / 1e6,
        "device": device.type,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="vit_small_patch16_224")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        trainable = None if args.one == "all" else int(args.one)
        print(json.dumps(run_one(args.backbone, args.size, args.batch, trainable, args.steps)))
        return
    rows = []
    for setting in ("all", "4", "0"):
        cmd = [
            sys.executable,
            __file__,
            "--backbone",
            args.backbone,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--one",
            setting,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append((setting, json.loads(out)))
    dev = rows[0][1]["device"]
    print(f"\n{args.backbone}, {args.size} px, batch {args.batch}, precision auto, {dev}")
    print("| trained | parameters trained (M) | images/s | peak memory (GiB) |")
    print("|---|---|---|---|")
    names = {"all": "everything (fine-tuned)", "4": "head + last 4 blocks", "0": "head only (frozen backbone)"}
    for setting, r in rows:
        print(f"| {names[setting]} | {r['trained_params_m']:.3f} | {r['img_per_s']:.1f} | {r['peak_gib']:.2f} |")


if __name__ == "__main__":
    main()
