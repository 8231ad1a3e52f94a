"""Stage 2 alone on fixed pseudo masks: the Dice weight of its loss, seeds, mean ± std.

For each benchmark (``default``, ``hard``; both run ``configs/cpu.yaml``, the CPU recipe)
the data is synthesised with ``--data-seed``, stage 1 (seed 0) and the pseudo masks run once, then
stage 2 trains on those same masks with each ``--dice`` weight and each training seed and is
scored on the test split. Only stage 2 varies, so the table isolates its loss. Finished runs are
skipped when re-run with the same ``--out``.

Run: ``python benchmarks/stage2_loss.py --out runs/bench-stage2`` (about 28 minutes on 2 CPU
cores for both benchmarks, 2 weights and 3 seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

CONFIGS = {"default": "cpu.yaml", "hard": "cpu.yaml"}  # one recipe; the synthesised data is the preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-stage2"))
    ap.add_argument("--benchmarks", default="default,hard")
    ap.add_argument("--dice", default="0,1", help="stage2.loss.dice_weight values, comma separated")
    ap.add_argument("--seeds", default="0,1,2", help="stage-2 training seeds, comma separated")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--train-tiles", type=int, default=800)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="pipeline key=value for every run")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    import segmix
    from segmix.config import load_config
    from segmix.data.spec import resolve_spec
    from segmix.pipeline.config import RunConfig
    from segmix.pipeline.stages import evaluate_model, run_pipeline
    from segmix.train import train_segmenter

    weights = [float(w) for w in args.dice.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["| benchmark | pseudo-mask mIoU % | " + " | ".join(f"final mIoU %, dice {w:g}" for w in weights) + " |"]
    lines.append("|---" * (2 + len(weights)) + "|")
    for bench in args.benchmarks.split(","):
        root = args.out / bench
        config = Path(segmix.__file__).parent / "configs" / CONFIGS[bench]
        data = root / "data"
        if not (data / "dataset.yaml").is_file():
            preset = "hard" if bench == "hard" else "default"
            cmd = [sys.executable, "-m", "segmix.cli", "synth", "--out", str(data), "--preset", preset]
            cmd += ["--seed", str(args.data_seed), "--train", str(args.train_tiles), "--no-sheet"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        base = load_config(RunConfig, config, ["fully_supervised=false", *args.extra])
        metrics = run_pipeline(
            base.model_copy(update={"data": str(data)}), root / "stage1", until="cams", progress=False
        )
        spec = resolve_spec(data)
        finals = {}
        for w in weights:
            for seed in seeds:
                out = root / f"dice{w:g}-seed{seed}"
                result = out / "result.json"
                if not result.is_file():
                    sets = [f"stage2.seed={seed}", f"stage2.loss.dice_weight={w}", *args.extra]
                    cfg = load_config(RunConfig, config, sets)
                    masks = root / "stage1" / "cams" / "masks"
                    model = train_segmenter(cfg.stage2, data, masks, out, spec, progress=False)
                    s = evaluate_model(cfg, model, data, out / "evaluate", 0)
                    result.write_text(json.dumps({"miou": s.miou, "iou": [float(v) for v in s.iou]}))
                r = json.loads(result.read_text())
                finals.setdefault(w, []).append(r["miou"])
                print(f"{bench} dice {w:g} seed {seed}: test mIoU {r['miou']:.4f}, per class {r['iou']}", flush=True)
        cells = [f"{statistics.mean(v) * 100:.2f} ± {statistics.stdev(v) * 100 if len(v) > 1 else 0:.2f}"
                 for v in finals.values()]  # fmt: skip
        lines.append(f"| {bench} | {metrics['pseudo_masks']['miou'] * 100:.2f} | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
