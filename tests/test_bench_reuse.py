"""The benchmarks' reuse of finished stages: a variant starts from the run that shares the most."""

import json
from pathlib import Path

import pytest

from tests.conftest import benchmark_modules

bench = None  # benchmarks/feedback.py while this file's tests run (its plug-ins registered only then)


@pytest.fixture(scope="module", autouse=True)
def _feedback_module():
    global bench
    with benchmark_modules() as import_module:
        bench = import_module("feedback")
        yield


VARIANTS = {
    "segmix": [],
    "no-relabel": ["relabel.rounds=0"],
    "stage1-8": ["stage1.train.epochs=8"],
    "stage1-8-no-relabel": ["stage1.train.epochs=8", "relabel.rounds=0"],
}


def _finished(runs: Path, variant: str, seed: int = 0) -> Path:
    folder = runs / variant / f"seed{seed}"
    for stage in bench.REUSABLE:
        (folder / stage).mkdir(parents=True)
        (folder / stage / ".done.json").write_text(json.dumps({"stage": stage}))
    return folder


def test_stages_before_change():
    assert bench.stages_before_change([]) == len(bench.REUSABLE)
    assert bench.stages_before_change(["relabel.rounds=0"]) == bench.REUSABLE.index("relabel")
    assert bench.stages_before_change(["stage2.x=1", "cams.y=2"]) == bench.REUSABLE.index("cams")
    assert bench.stages_before_change(["stage1.train.epochs=8", "relabel.rounds=0"]) == 0
    assert bench.stages_before_change(["seed=3"]) == 0


def test_combined_variant_starts_from_the_run_that_shares_its_stage1(tmp_path):
    _finished(tmp_path, "segmix")
    assert bench.upstream(VARIANTS, "stage1-8-no-relabel", tmp_path, 0) == (
        tmp_path / "segmix" / "seed0",
        VARIANTS["stage1-8-no-relabel"],
    )  # nothing shares its stage 1 yet: segmix, nothing to copy
    shorter = _finished(tmp_path, "stage1-8")
    _finished(tmp_path, "no-relabel")  # shares only the rounds: copying from it would retrain stage 1
    base, added = bench.upstream(VARIANTS, "stage1-8-no-relabel", tmp_path, 0)
    assert (base, added) == (shorter, ["relabel.rounds=0"])

    target = tmp_path / "stage1-8-no-relabel" / "seed0"
    bench.reuse_upstream(base, target, added)
    assert sorted(p.name for p in target.iterdir()) == sorted(bench.REUSABLE[:-1])


def test_upstream_needs_a_finished_run_of_the_same_seed(tmp_path):
    _finished(tmp_path, "stage1-8", seed=1)
    base, added = bench.upstream(VARIANTS, "stage1-8-no-relabel", tmp_path, 0)
    assert base == tmp_path / "segmix" / "seed0" and added == VARIANTS["stage1-8-no-relabel"]
