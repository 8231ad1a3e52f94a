"""One precision rule for training and inference: what ``precision`` accepts, what ``auto``
resolves to on a device, and the autocast context that applies it.

``auto`` is bf16 autocast on CUDA GPUs that support it and fp16 AMP on older GPUs. On a CPU it is
bf16 for inference where the hardware computes bf16 natively (AVX512-BF16 or AMX, with ATen's
kernels at AVX-512 level) and fp32 everywhere else, training included: on 2 cores of a Xeon with
AMX, bf16 made the demo's forward passes 20-37 % faster but its training steps 5-13 % slower
(on an AMD EPYC with AVX512-BF16, stage 1's 7 % slower, stage 2's 12 % faster), and on an
AVX2-only CPU PyTorch emulates bf16, 6-12x slower than fp32 (``benchmarks/cpu_speed.py``).

>>> precision_name(32), precision_name("bf16"), precision_name("16-mixed")
('32-true', 'bf16-mixed', '16-mixed')
>>> resolve_precision("32", "cpu"), resolve_precision("auto", "cpu", training=True)
('32-true', '32-true')
>>> import torch
>>> with autocast("32-true", "cpu"):
...     torch.ones(2, 2) @ torch.ones(2, 2)
tensor([[2., 2.],
        [2., 2.]])
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import torch
from pydantic import BeforeValidator

AUTO = "auto"
FP32, FP16, BF16 = "32-true", "16-mixed", "bf16-mixed"
PRECISIONS = (AUTO, FP32, FP16, BF16)
# Lightning's short names and the usual spellings of each.
_ALIASES = {"32": FP32, "fp32": FP32, "float32": FP32, "16": FP16, "fp16": FP16, "bf16": BF16, "bfloat16": BF16}
_DTYPES = {FP16: torch.float16, BF16: torch.bfloat16}


def precision_name(value: str | int) -> str:
    """The canonical name of a precision given as ``auto``, ``32``, ``16``, ``bf16``, Lightning's
    long names (``32-true``, ``16-mixed``, ``bf16-mixed``) or the integers 32 and 16.

    Raises:
        ValueError: naming the known values.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"precision {value!r}: expected one of {', '.join(PRECISIONS)} (or 32, 16, bf16)")
    name = str(value).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r}; known: {', '.join(PRECISIONS)} (or 32, 16, bf16)")
    return name


# A config field holding a precision: validated and stored under its canonical name.
PrecisionName = Annotated[str, BeforeValidator(precision_name)]


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively: AVX512-BF16 or AMX, with ATen's kernels at
    AVX-512 level (``ATEN_CPU_CAPABILITY=avx2`` makes even such a CPU emulate bf16)."""
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return hardware and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(precision: str | int, device_type: str, training: bool = False) -> str:
    """``precision`` with ``auto`` resolved for a device type (``"cpu"``, ``"cuda"``): on a GPU
    bf16 where it has it, else fp16 AMP; on a CPU bf16 for inference where it computes bf16
    natively, else (and for ``training``) fp32."""
    name = precision_name(precision)
    if name != AUTO:
        return name
    if device_type == "cuda":
        return BF16 if torch.cuda.is_bf16_supported() else FP16
    return BF16 if device_type == "cpu" and not training and native_bf16_cpu() else FP32


def autocast(precision: str | int, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` for inference on ``device_type`` (``auto`` resolved);
    none for fp32."""
    name = resolve_precision(precision, device_type)
    if name == FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=_DTYPES[name])
