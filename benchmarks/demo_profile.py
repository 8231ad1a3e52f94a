"""Where the demo's time goes: ``segmix demo`` (or ``segmix run CONFIG``) timed per stage, on this
CPU as it is and capped at AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: a CPU
without native bf16, where ``precision: auto`` runs fp32).

    python benchmarks/demo_profile.py --out runs/profile [--isa native,avx2] [--config configs/demo.yaml]

Each setting runs alone in its own process (never two at once), in a fresh folder
``--out/<isa>`` (an existing one is moved aside by ``segmix run`` only where its config differs:
remove it to time again). Prints the CPU's name and bf16 capabilities, then a markdown table of
each stage's seconds and share of the total (``metrics.json``), the relabel round's maps and
training under it, the wall time of the whole command, and the run's pseudo-mask and test mIoU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cpu_speed import ISA_CAPS, cpu_name, spawn  # noqa: E402
from segmix.pipeline.layout import stage_seconds  # noqa: E402


def run(isa: str, config: str | None, out: Path) -> tuple[dict, float]:
    """``segmix demo`` / ``segmix run CONFIG`` into ``out``; its metrics and wall seconds."""
    segmix = [sys.executable, "-m", "segmix.cli"]
    cmd = segmix + (["run", config, "--out", str(out)] if config else ["demo", "--out", str(out)])
    env = {**os.environ, **ISA_CAPS[isa]}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (out.parent / f"{isa}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{isa}: {' '.join(cmd)} failed (rc {done.returncode}); see {out.parent / f'{isa}.log'}")
    return json.loads((out / "metrics.json").read_text()), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--isa", default="native,avx2", help="comma list of native, avx2")
    p.add_argument("--config", default=None, help="a run config (default: the demo's)")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}")
    results = {}
    for isa in args.isa.split(","):
        print(f"isa {isa}: {json.dumps(spawn(isa))}", flush=True)
        metrics, wall = run(isa, args.config, args.out / isa)
        results[isa] = (stage_seconds(metrics), sum(metrics["seconds"].values()), wall, metrics)
        print(f"  {isa}: {wall:.0f} s", flush=True)
    isas = list(results)
    print("\n| stage | " + " | ".join(f"{i} s | share" for i in isas) + " |")
    print("|---|" + "---|---|" * len(isas))
    for stage in results[isas[0]][0]:
        cells = []
        for isa in isas:
            table, total = results[isa][0], results[isa][1]
            v = table.get(stage)
            cells += ["–", "–"] if v is None else [f"{v:.1f}", f"{100 * v / total:.0f}%"]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| **stages** | " + " | ".join(f"**{results[i][1]:.0f}** | 100%" for i in isas) + " |")
    print("| wall (command) | " + " | ".join(f"{results[i][2]:.0f} | " for i in isas) + " |")
    for isa in isas:
        m = results[isa][3]
        pm, test = m.get("pseudo_masks", {}).get("miou"), m.get("test", {})
        ratio = test.get("ratio_to_fully_supervised")
        print(
            f"\n{isa}: pseudo masks {pm * 100:.2f} % · test {test.get('miou', 0) * 100:.2f} % · "
            f"ratio to fully supervised {ratio:.3f}"
            if pm is not None and ratio is not None
            else f"\n{isa}: no scores"
        )


if __name__ == "__main__":
    main()
