"""Whole-slide prediction speed and memory on a generated 20,000 x 20,000 pyramidal TIFF.

1. Writes (once) a tiled, JPEG-compressed pyramidal TIFF: an elliptic tissue area of synthetic
   H&E texture on glass, with levels 1/2, 1/4, 1/8 written consistently from the same layout.
2. In a fresh process (so only prediction counts towards its peak RSS) runs ``predict_slide``
   with a DeepLabV3+ (resnet18) at the given level, and the raw model forward on batches of the
   same size and dtype.

Prints a markdown table: tiles/s of predict vs the raw forward (goal >= 0.8), peak RSS (goal
<= 2 GB). Run: ``python benchmarks/slide_speed.py [--size 20000] [--level 1]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def texture_bank(n: int = 24, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    from segmix.data.synth import SynthConfig, render_tile

    cfg = SynthConfig(tile_size=size, glass_prob=0.0)
    return [render_tile(np.random.default_rng([seed, i]), cfg)[0] for i in range(n)]


def write_slide(path: Path, size: int, levels: int = 4, tile: int = 256) -> None:
    import tifffile
    from PIL import Image

    bank0 = texture_bank(size=tile)
    glass = np.array([246, 244, 247], np.uint8)

    def tiles(level: int):
        f = 2**level
        bank = [np.asarray(Image.fromarray(b).resize((max(1, tile // f),) * 2, Image.BILINEAR)) for b in bank0]
        n = -(-size // f)
        cy = cx = size / 2
        ry, rx = size * 0.42, size * 0.36
        for ty in range(0, n, tile):
            for tx in range(0, n, tile):
                yy, xx = np.mgrid[ty : ty + tile, tx : tx + tile] * f
                inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
                out = np.empty((tile, tile, 3), np.uint8)
                out[:] = glass
                if inside.any():
                    b = bank[(ty // tile * 7 + tx // tile * 13) % len(bank)]
                    reps = -(-tile // b.shape[0])
                    tex = np.tile(b, (reps, reps, 1))[:tile, :tile]
                    out[inside] = tex[inside]
                yield out

    res = (1e4 / 0.5, 1e4 / 0.5)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for level in range(levels):
            n = -(-size // 2**level)
            kw = dict(shape=(n, n, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb", compression="jpeg")
            if level == 0:
                tw.write(tiles(0), subifds=levels - 1, resolution=res, resolutionunit="CENTIMETER", **kw)
            else:
                tw.write(tiles(level), subfiletype=1, **kw)


def measure(slide: str, level: int, window: int, batch: int, repeats: int) -> dict:
    """Runs in its own process: predict the slide, then the raw forward; report tiles/s and RSS."""
    import torch

    from segmix.config.precision import autocast
    from segmix.data.synth import SynthConfig, dataset_spec
    from segmix.infer import predict_slide
    from segmix.models import create_segmenter, predict_probs
    from segmix.train import Stage2Config

    spec = dataset_spec(SynthConfig())
    cfg = Stage2Config(train={"image_size": window})
    model = create_segmenter("DeepLabV3Plus", "resnet18", spec.num_indices).eval().to(memory_format=torch.channels_last)
    out = Path(slide).parent / "slide_out"
    res = predict_slide(model, cfg, spec, slide, out, level=level, batch_size=batch)
    rss_predict = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = torch.rand(batch, 3, window, window)
    with torch.no_grad(), autocast(cfg.precision, "cpu"):  # as predict_slide runs it
        predict_probs(model, x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            predict_probs(model, x)
        raw = repeats * batch / (time.perf_counter() - t0)
    return {**res.__dict__, "raw_tiles_per_second": raw, "peak_rss_mb": rss_predict, "batch": batch, "window": window}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--window", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-slide"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.level, args.window, args.batch, args.repeats)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    slide = args.out / f"synthetic_{args.size}.tif"
    if not slide.is_file():
        t0 = time.perf_counter()
        write_slide(slide, args.size)
        print(
            f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr
        )
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(slide),
        "--level",
        str(args.level),
        "--window",
        str(args.window),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
    ]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    ratio = r["tiles_per_second"] / r["raw_tiles_per_second"]
    print(
        "| slide | level (size) | tissue tiles / all | predict tiles/s | raw forward tiles/s | ratio "
        "| peak RSS MB | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.size}x{args.size} pyramidal TIFF | {r['level']} ({r['level_size'][0]}x{r['level_size'][1]}) | "
        f"{r['tiles_run']} / {r['tiles_total']} | {r['tiles_per_second']:.2f} | {r['raw_tiles_per_second']:.2f} | "
        f"{ratio:.2f} | {r['peak_rss_mb']:.0f} | {r['seconds']:.0f} |"
    )
    from segmix.config.precision import resolve_precision

    precision = resolve_precision("auto", "cpu")
    print(f"\nwindow {r['window']} px, batch {r['batch']}, DeepLabV3+ resnet18, {precision} (auto), channels_last")


if __name__ == "__main__":
    main()
