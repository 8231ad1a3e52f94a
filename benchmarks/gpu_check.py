"""One short GPU check of both stages at 224 px with resnet50-class backbones, bf16.

Synthesises a few hundred 224-px tiles, trains stage 1 (resnet50 CAM classifier, SegMix) and
stage 2 (DeepLabV3+ / resnet50) for a few epochs each, generates pseudo masks and evaluates,
and prints training images/s (epochs after the first, so start-up is not counted), CAM
images/s and peak GPU memory per stage. Pretrained weights are off (the GPU machine has no
internet), so the quality numbers only show the pipeline ran, not what it can reach.

Run: ``python benchmarks/gpu_check.py --out /tmp/gpu`` (about 3 minutes on one H100/H200).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else float("nan")


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--tiles", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--encoder", default="resnet50")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    from segmix.data.synth import SynthConfig, generate
    from segmix.eval.evaluate import evaluate
    from segmix.pseudo import CamConfig, generate_pseudo_masks
    from segmix.train import Stage1Config, Stage2Config
    from segmix.train import stage1 as s1
    from segmix.train import stage2 as s2

    data = args.out / "data"
    t0 = time.perf_counter()
    generate(SynthConfig(n_train=args.tiles, n_val=64, n_test=64, tile_size=args.size, seed=0), data)
    synth_s = time.perf_counter() - t0
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "tiles": args.tiles,
        "size": args.size,
        "synth_seconds": round(synth_s, 1),
    }

    timer1 = EpochTimer()
    reset_peak()
    cfg1 = Stage1Config(
        model={"backbone": args.backbone},
        num_workers=8,
        ladder={"patch_min": 16},
        mixing={"method": "segmix"},
        train={"image_size": args.size, "batch_size": min(64, args.tiles), "epochs": args.epochs},
    )
    clf = s1.train_classifier(cfg1, data, args.out / "stage1", progress=False, callbacks=[timer1])
    per_epoch = args.tiles // cfg1.train.batch_size * cfg1.train.batch_size  # drop_last
    results["stage1_img_per_s"] = round(per_epoch / min(timer1.times[1:] or timer1.times), 1)
    results["stage1_peak_gib"] = peak_gib()

    reset_peak()
    t0 = time.perf_counter()
    scores = generate_pseudo_masks(clf, data, args.out / "cams", CamConfig(batch_size=64))
    results["cams_img_per_s"] = round(args.tiles / (time.perf_counter() - t0), 1)
    results["cams_peak_gib"] = peak_gib()
    results["pseudo_miou"] = round(scores.miou, 4)

    timer2 = EpochTimer()
    reset_peak()
    cfg2 = Stage2Config(
        model={"encoder": args.encoder},
        train={"image_size": args.size, "batch_size": 32, "epochs": args.epochs},
        num_workers=8,
    )
    seg = s2.train_segmenter(
        cfg2, data, args.out / "cams" / "masks", args.out / "stage2", progress=False, extra_callbacks=[timer2]
    )
    n2 = len(list((data / "train").iterdir()))
    results["stage2_img_per_s"] = round(n2 / min(timer2.times[1:] or timer2.times), 1)
    results["stage2_peak_gib"] = peak_gib()
    results["test_miou"] = round(evaluate(seg, data, "test").miou, 4)
    print(json.dumps(results, indent=2))
    print("\n| stage | images/s | peak GPU memory GiB |\n|---|---|---|")
    print(
        f"| stage 1 train ({args.backbone}, {args.size} px, batch 64, bf16) | {results['stage1_img_per_s']} "
        f"| {results['stage1_peak_gib']} |"
    )
    print(f"| pseudo masks (CAM, 2 scales + flip) | {results['cams_img_per_s']} | {results['cams_peak_gib']} |")
    print(
        f"| stage 2 train (DeepLabV3+ {args.encoder}, batch 32, bf16) | {results['stage2_img_per_s']} "
        f"| {results['stage2_peak_gib']} |"
    )


if __name__ == "__main__":
    main()
