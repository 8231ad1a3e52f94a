"""Whole-slide prediction speed and memory on generated pyramidal TIFFs of growing size.

1. Writes (once per size) a tiled, JPEG-compressed pyramidal TIFF: an elliptic tissue area of
   synthetic H&E texture on glass (radii ``--tissue`` times 0.42 and 0.36 of the side), with
   levels 1/2, 1/4, 1/8 written consistently from the same layout.
2. In a fresh process per size (so only prediction counts towards its peak RSS) runs
   ``predict_slide`` with a DeepLabV3+ (resnet18) at the given level: the full-resolution class
   map (pyramidal TIFF), areas and polygons from it; then the raw model forward on batches of
   the same size and dtype.

Prints a markdown table, one row per size: tiles/s of predict vs the raw forward (goal >= 0.8),
peak RSS (goal < 2.5 GB at 60k x 60k), the class map's size. Run:
``python benchmarks/slide_speed.py [--size 20000 60000] [--level 0] [--tissue 1 0.25]``.
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


def write_slide(path: Path, size: int, tissue: float = 1.0, levels: int = 4, tile: int = 256) -> None:
    import tifffile
    from PIL import Image

    bank0 = texture_bank(size=tile)
    glass = np.array([246, 244, 247], np.uint8)

    def tiles(level: int):
        f = 2**level
        bank = [np.asarray(Image.fromarray(b).resize((max(1, tile // f),) * 2, Image.BILINEAR)) for b in bank0]
        n = -(-size // f)
        cy = cx = size / 2
        ry, rx = size * 0.42 * tissue, size * 0.36 * tissue
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


def measure(slide: str, level: int, window: int, batch: int, repeats: int, model_file: str | None) -> dict:
    """Runs in its own process: predict the slide, then the raw forward; report tiles/s and RSS."""
    import torch

    from segmix.config.precision import autocast
    from segmix.data.synth import SynthConfig, dataset_spec
    from segmix.infer import predict_slide
    from segmix.models import create_segmenter, load_segmenter, predict_probs
    from segmix.train import Stage2Config

    if model_file:  # a trained segmenter: the maps (and so the polygons) a user gets
        trained = load_segmenter(model_file)
        model, cfg, spec = trained.network, trained.config, trained.spec
        window = cfg.train.image_size
    else:  # untrained: a noisy map, the most polygons
        spec = dataset_spec(SynthConfig())
        cfg = Stage2Config(train={"image_size": window})
        model = create_segmenter("DeepLabV3Plus", "resnet18", spec.num_indices)
    model = model.eval().to(memory_format=torch.channels_last)
    out = Path(slide).parent / f"{Path(slide).stem}_out"
    res = predict_slide(model, cfg, spec, slide, out, level=level, batch_size=batch)
    rss_predict = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = torch.rand(batch, 3, window, window)
    with torch.no_grad(), autocast(cfg.precision, "cpu"):  # as predict_slide runs it
        predict_probs(model, x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            predict_probs(model, x)
        raw = repeats * batch / (time.perf_counter() - t0)
    return {**res.__dict__, "raw_tiles_per_second": raw, "peak_rss_mb": rss_predict, "window": window}


def run_size(args, size: int, tissue: float) -> dict:
    """Write the slide of this size (once) and measure it in a fresh process."""
    slide = args.out / f"synthetic_{size}_t{tissue:g}.tif"
    if not slide.is_file():
        t0 = time.perf_counter()
        write_slide(slide, size, tissue)
        took = time.perf_counter() - t0
        print(f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB) in {took:.0f} s", file=sys.stderr)
    cmd = [sys.executable, __file__, "--measure", str(slide), "--level", str(args.level), "--window", str(args.window)]
    cmd += ["--batch", str(args.batch), "--repeats", str(args.repeats)] + (
        ["--model", args.model] if args.model else []
    )
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="+", default=[20000, 60000])
    ap.add_argument("--tissue", type=float, nargs="+", default=[1.0], help="tissue radii per size (last repeats)")
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--window", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-slide"))
    ap.add_argument("--model", help="a trained segmenter.pt (default: an untrained DeepLabV3+ resnet18 at --window)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.level, args.window, args.batch, args.repeats, args.model)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    tissues = args.tissue + [args.tissue[-1]] * (len(args.size) - len(args.tissue))
    print(
        "| slide | tissue radii | level (size) | class map | tissue tiles / all | predict tiles/s "
        "| raw forward tiles/s | ratio | peak RSS MB | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, tissue in zip(args.size, tissues):
        r = run_size(args, size, tissue)
        ratio = r["tiles_per_second"] / r["raw_tiles_per_second"]
        print(
            f"| {size}x{size} | x{tissue:g} | {r['level']} ({r['level_size'][0]}x{r['level_size'][1]}) | "
            f"{r['full_map_size'][0]}x{r['full_map_size'][1]} | {r['tiles_run']} / {r['tiles_total']} | "
            f"{r['tiles_per_second']:.2f} | {r['raw_tiles_per_second']:.2f} | {ratio:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['seconds']:.0f} |",
            flush=True,
        )
    from segmix.config.precision import resolve_precision

    precision = resolve_precision("auto", "cpu")
    model = args.model or f"untrained DeepLabV3+ resnet18, window {args.window} px"
    print(f"\n{model}, batch {args.batch}, {precision} (auto), channels_last")


if __name__ == "__main__":
    main()
