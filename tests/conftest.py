"""Tiny dataset trees shaped like the three published benchmarks, built per test."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from segmix.data.io import write_image, write_mask
from segmix.data.labels import format_label
from segmix.data.spec import PRESETS


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker takes its share of the cores, for its own torch and the
    commands its tests start: two torch threads per core collapse (:mod:`segmix.runtime`)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from segmix.runtime import usable_cores

        share = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_modules():
    """Import modules of ``benchmarks/`` as its scripts do (by name, their folder on the path):
    ``import_module`` inside the block. Their plug-ins register, and leave the registries (and
    the imported modules ``sys.modules``) when the block ends, so that the configs of other tests,
    and their hashes, never carry a plug-in's knobs that the ``segmix`` processes they start lack."""
    from segmix.shuffle import CURRICULA, METHODS, MIXERS

    registries = [(r, dict(r)) for r in (CURRICULA, METHODS, MIXERS)]
    modules, path = set(sys.modules), list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module
    finally:
        for registry, before in registries:
            registry.clear()
            registry.update(before)
        for name in set(sys.modules) - modules:
            if getattr(sys.modules[name], "__file__", "") and str(BENCHMARKS) in sys.modules[name].__file__:
                del sys.modules[name]
        sys.path[:] = path


@pytest.fixture
def bench_module():
    """``bench_module(name)``: a module of ``benchmarks/`` for this test (:func:`benchmark_modules`)."""
    with benchmark_modules() as import_module:
        yield import_module


def make_tree(root: Path, preset: str, n_train: int = 4, n_eval: int = 2, sizes=((16, 16),), seed: int = 0) -> Path:
    """Write a tree in ``preset``'s layout: labelled train tiles, val/test images with masks."""
    spec = PRESETS[preset]
    rng = np.random.default_rng(seed)
    k = spec.num_classes
    d = spec.splits
    for i in range(n_train):
        label = np.zeros(k, np.uint8)
        label[rng.choice(k, size=1 + i % k, replace=False)] = 1
        h, w = sizes[i % len(sizes)]
        write_image(
            root / d.train / f"img{i}-{format_label(label, spec.label_format)}.png",
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        )
    for split in (d.val, d.test):
        for i in range(n_eval):
            h, w = sizes[i % len(sizes)]
            mask = rng.integers(0, spec.num_indices, (h, w)).astype(np.uint8)
            write_image(root / split / d.image_dir / f"e{i}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            write_mask(root / split / d.mask_dir / f"e{i}.png", mask, spec.palette)
    return root


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """``module_tmp(name)``: a new folder for a test file's shared fixtures, removed when the file's
    tests are done. pytest keeps ``tmp_path_factory``'s folders until the session ends, and a trained
    run holds a few hundred MB of checkpoints: kept, they filled CI's disk."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def luad_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "luad", "luad-histoseg")


def segmix_under_torchrun(processes: int, port: int, *args: str) -> list[str]:
    """The argv of ``torchrun --nproc_per_node N -m segmix.cli ARGS`` on this interpreter."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_port",
        str(port),
        "-m",
        "segmix.cli",
        *args,
    ]
