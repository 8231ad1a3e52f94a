"""Training-step and inference time of the demo's two models on the CPU: fp32 vs bf16 vs ``auto``,
1 vs 2 threads.

    python benchmarks/cpu_speed.py [--steps 6] [--isa native,avx2] [--models stage1,stage2,cams,relabel]

Stage 1 is ``configs/demo.yaml``'s classifier (EfficientNet-Lite0, output stride 16, 112 px,
batch 32: forward, BCE on the image logits, backward, AdamW step); stage 2 its segmenter
(DeepLabV3+ / tu-efficientnet_lite0, 112 px, batch 16, cross-entropy). Inference: ``cams`` is
the classifier's CAMs of 32 tiles at the pseudo masks' default scales with the flip
(:func:`segmix.pseudo.class_activation_maps`), ``relabel`` the segmenter's probabilities of 32
tiles at the relabel round's default scales with the flip (:func:`segmix.models.segment_probs`);
a step is one such batch. Every setting runs alone
in its own process, one after another (never two at once), with the median of ``--steps``
steps after two warm-up steps. ``--isa avx2`` runs the same processes with ATen and oneDNN
capped at AVX2 (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``): an emulation of a
CPU without native bf16 on one that has it; on an AVX2-only CPU ``native`` is already that.
Prints the CPU's name and bf16 capabilities, what ``precision: auto`` resolves to, and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ISA_CAPS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
MODELS = {"stage1": 32, "stage2": 16, "cams": 32, "relabel": 32}  # model -> batch size of the demo
INFERENCE = ("cams", "relabel")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()} ({fields.get('CPU(s)', '?').strip()} CPUs)"


def capabilities() -> dict:
    import torch

    from segmix.config.precision import native_bf16_cpu, resolve_precision

    return {
        "aten": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx": torch.cpu._is_amx_tile_supported(),
        "native_bf16": native_bf16_cpu(),
        "auto": resolve_precision("auto", "cpu"),
    }


def build(model: str):
    """The demo's model and one training step's loss function on a random batch."""
    import torch
    import torch.nn.functional as F

    from segmix.models import CamClassifier, create_segmenter, segmenter_input

    batch, size = MODELS[model], 112
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    if model in INFERENCE:
        return inference(model, images)
    if model == "stage1":
        net = CamClassifier("efficientnet_lite0", 4, output_stride=16)
        x, y = net.normalize(images), torch.randint(0, 2, (batch, 4), generator=g).float()

        def loss():
            return F.binary_cross_entropy_with_logits(net(x)[0].float(), y)

    else:
        net = create_segmenter("auto", "tu-efficientnet_lite0", 5)
        x, y = segmenter_input(images.float() / 255), torch.randint(0, 5, (batch, size, size), generator=g)

        def loss():
            return F.cross_entropy(net(x).float(), y)

    return net.to(memory_format=torch.channels_last), loss


def inference(model: str, images):
    """The demo's model in eval mode and one batch's inference (no loss: ``run_one`` skips the step)."""

    from segmix.config import Stage2Config
    from segmix.models import CamClassifier, create_segmenter, segment_probs
    from segmix.pseudo import CamConfig, class_activation_maps
    from segmix.pseudo.relabel import RelabelConfig

    if model == "cams":
        net = CamClassifier("efficientnet_lite0", 4, output_stride=16).eval()
        x, cams = net.normalize(images), CamConfig()
        return net, lambda: class_activation_maps(net, x, cams.scales, cams.flip)
    net = create_segmenter("auto", "tu-efficientnet_lite0", 5).eval()
    cfg = Stage2Config(train={"image_size": images.shape[-1]})
    tiles = list(images.permute(0, 2, 3, 1).numpy())
    scales = RelabelConfig().scales
    # precision=None: segment_probs would apply the config's own; the caller's autocast decides here
    return net, lambda: segment_probs(net, tiles, cfg.model_copy(update={"precision": "32"}), "cpu", 5, None, scales)


def run_one(model: str, precision: str, threads: int, steps: int) -> dict:
    import torch

    from segmix.config.precision import autocast, resolve_precision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, loss_fn = build(model)
    if model in INFERENCE:
        return time_inference(net, loss_fn, precision, steps)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with autocast(precision, "cpu"):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # the first steps pay for oneDNN's kernel choice
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"seconds": times[len(times) // 2], "resolved": resolve_precision(precision, "cpu")}


def time_inference(net, infer, precision: str, steps: int) -> dict:
    import torch

    from segmix.config.precision import autocast, resolve_precision

    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(precision, "cpu"):
            infer()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"seconds": times[len(times) // 2], "resolved": resolve_precision(precision, "cpu")}


def child(args: argparse.Namespace) -> None:
    result = run_one(args.model, args.precision, int(args.threads), args.steps) if args.model else capabilities()
    print(json.dumps(result))


def spawn(isa: str, *argv: str) -> dict:
    env = {**os.environ, **ISA_CAPS[isa]}
    out = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{isa} {' '.join(argv)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--isa", default="native", help="comma list of native, avx2")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"CPU: {cpu_name()}")
    rows = []
    for isa in args.isa.split(","):
        caps = spawn(isa)
        print(f"isa {isa}: {json.dumps(caps)}")
        for model in args.models.split(","):
            for n in threads:
                for precision in ("32-true", "bf16-mixed", "auto"):
                    r = spawn(isa, "--model", model, "--precision", precision, "--threads", str(n), "--steps",
                              str(args.steps))  # fmt: skip
                    rows.append((isa, model, n, precision, r["resolved"], r["seconds"]))
                    print(f"  {isa} {model} threads={n} {precision}: {r['seconds']:.3f} s/step", flush=True)
    print("\n| ISA | model (batch) | threads | precision | runs as | s / step | vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    fp32 = {(i, m, n): s for i, m, n, p, _, s in rows if p == "32-true"}
    for isa, model, n, precision, resolved, seconds in rows:
        ratio = seconds / fp32[(isa, model, n)]
        print(f"| {isa} | {model} ({MODELS[model]}) | {n} | {precision} | {resolved} | {seconds:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
