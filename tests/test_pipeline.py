"""segmix run: stages, done-markers, resume/skip, invalidation, metrics.json, report; presets."""

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segmix.cli import app
from segmix.config import load_config
from segmix.pipeline import STAGES, RunConfig, run_pipeline
from tests.conftest import make_tree

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "segmix" / "configs"
TINY = [
    "synth.n_train=24",
    "synth.n_val=4",
    "synth.n_test=4",
    "synth.tile_size=64",
    "synth.glass_prob=0.5",
    "stage1.model.backbone=resnet18",
    "stage1.model.weights=null",
    "stage1.train.image_size=64",
    "stage1.train.batch_size=8",
    "stage1.train.epochs=1",
    "stage1.num_workers=0",
    "stage1.ladder.patch_min=16",
    "cams.scales=[1.0]",
    "cams.flip=false",
    "stage2.model.encoder=resnet18",
    "stage2.model.weights=null",
    "stage2.train.image_size=64",
    "stage2.train.batch_size=8",
    "stage2.train.epochs=1",
    "stage2.num_workers=0",
    "report.gallery=2",
    "report.mixed=2",
]


def tiny_config(*extra: str) -> RunConfig:
    return load_config(RunConfig, CONFIGS / "demo.yaml", TINY + list(extra))


@pytest.fixture(scope="module")
def tiny_run(module_tmp):
    run = module_tmp("run")
    metrics = run_pipeline(tiny_config(), run, progress=False)
    return run, metrics


@pytest.mark.slow
def test_full_run_writes_stable_metrics_and_report(tiny_run):
    run, metrics = tiny_run
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    for key in ("miou", "fwiou", "per_class"):
        assert key in saved["pseudo_masks"]
    for key in ("miou", "fwiou", "dice", "per_class"):
        assert key in saved["test"] and key in saved["fully_supervised"]
    for section in ("pseudo_masks", "test", "fully_supervised"):
        assert 0 <= saved[section]["miou"] <= 1
        assert set(saved[section]["per_class"]) == {"TE", "NEC", "LYM", "TAS"}
    assert set(saved["seconds"]) == set(STAGES)
    assert set(saved["relabel"]["round1"]["seconds"]) == {"maps", "stage2"}
    for stage in STAGES:
        assert json.loads((run / stage / ".done.json").read_text())["hash"]
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 4 and "Feedback curriculum" in page and "mIoU" in page
    assert "<th>share</th>" in page and "round1: maps" in page and "<th>total</th>" in page  # the run table
    assert (run / "config.yaml").is_file() and (run / "stage1" / "config.yaml").is_file()


@pytest.mark.slow
def test_rerun_skips_done_stages(tiny_run):
    run, metrics = tiny_run
    before = {s: (run / s / ".done.json").stat().st_mtime_ns for s in STAGES}
    again = run_pipeline(tiny_config(), run, progress=False)
    # no stage ran again: every done-marker is the one written by the first run
    assert {s: (run / s / ".done.json").stat().st_mtime_ns for s in STAGES} == before
    assert again["test"] == metrics["test"]
    # stopping early keeps the later stages' metrics that are still done with this config
    full = json.loads((run / "metrics.json").read_text())
    run_pipeline(tiny_config(), run, progress=False, until="stage1")
    assert json.loads((run / "metrics.json").read_text()) == full and "pseudo_masks" in full


@pytest.mark.slow
def test_changed_config_redoes_only_downstream_and_keeps_old_outputs(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run)
    stage1_done = (run / "stage1" / ".done.json").read_text()
    old_cams_hash = json.loads((run / "cams" / ".done.json").read_text())["hash"]
    run_pipeline(tiny_config("cams.margin=0.3"), run, progress=False, until="cams")
    assert (run / "stage1" / ".done.json").read_text() == stage1_done  # upstream untouched
    assert json.loads((run / "cams" / ".done.json").read_text())["hash"] != old_cams_hash
    assert "stage2" not in json.loads((run / "metrics.json").read_text())  # stage 2 read the old masks
    assert (run / f"cams.stale-{old_cams_hash}" / "masks").is_dir()  # moved aside, not deleted


@pytest.mark.slow
def test_until_and_from(tmp_path):
    run = tmp_path / "r"
    run_pipeline(tiny_config(), run, progress=False, until="stage1")
    assert (run / "stage1" / ".done.json").is_file() and not (run / "cams").exists()
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(tiny_config(), run, progress=False, start="nope")
    # --from re-runs a done stage (its old folder moved aside)
    run_pipeline(tiny_config(), run, progress=False, start="stage1", until="stage1")
    assert len(list(run.glob("stage1.stale-*"))) == 1


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_checkpoint(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(tiny_run[0], run)
    (run / "stage1" / ".done.json").unlink()  # as if killed after the last checkpoint
    ckpt = run / "stage1" / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    run_pipeline(tiny_config(), run, progress=False, until="stage1")
    assert (run / "stage1" / ".done.json").is_file()
    assert not list(run.glob("stage1.stale-*"))  # same config: resumed in place, not restarted
    assert ckpt.stat().st_mtime_ns >= stamp


def test_pipeline_refuses_ddp_and_points_to_stage_commands(tmp_path):
    with pytest.raises(ValueError, match="stage commands"):
        run_pipeline(tiny_config("stage1.strategy=ddp", "stage1.devices=2"), tmp_path / "r", progress=False)


def test_cli_errors_name_the_key_and_unwritable_folder(tmp_path):
    r = CliRunner().invoke(
        app, ["run", str(CONFIGS / "demo.yaml"), "--out", str(tmp_path / "x"), "--set", "stage1.train.epochs=-1"]
    )
    assert r.exit_code == 2 and "stage1.train.epochs" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = CliRunner().invoke(app, ["run", str(CONFIGS / "demo.yaml"), "--out", str(blocker / "run")])
    assert r.exit_code == 2 and "not writable" in r.output


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["luad-histoseg", "bcss-wsss", "wsss4luad"])
def test_shipped_presets_run_each_stage_on_a_tiny_fixture(preset, tmp_path):
    sizes = ((72, 80), (64, 64)) if preset == "wsss4luad" else ((64, 64),)
    data = make_tree(tmp_path / "data", preset, n_train=8, n_eval=2, sizes=sizes)
    tiny = [
        "stage1.model.backbone=resnet18",
        "stage1.model.pretrained=false",
        "stage1.train.image_size=64",
        "stage1.train.batch_size=4",
        "stage1.train.epochs=1",
        "stage1.num_workers=0",
        "cams.scales=[1.0]",
        "cams.batch_size=4",
        "stage2.model.encoder=resnet18",
        "stage2.model.encoder_weights=null",
        "stage2.train.image_size=64",
        "stage2.train.batch_size=4",
        "stage2.train.epochs=1",
        "stage2.num_workers=0",
        f"data={data}",
    ]
    cfg = load_config(RunConfig, CONFIGS / f"{preset}.yaml", tiny)
    assert cfg.preset == preset
    metrics = run_pipeline(cfg, tmp_path / "run", progress=False, until="evaluate")
    assert 0 <= metrics["test"]["miou"] <= 1
    assert "pseudo_masks" not in metrics  # no train truth in the published layouts
    masks = list((tmp_path / "run" / "cams" / "masks").iterdir())
    assert len(masks) == 8


def test_moving_a_stage_aside_twice_keeps_both_earlier_outputs(tmp_path):
    from segmix.pipeline.stages import _move_aside

    for attempt in ("first", "second", "third"):
        (tmp_path / "stage1").mkdir()
        (tmp_path / "stage1" / "notes.txt").write_text(attempt)
        _move_aside(tmp_path / "stage1", "abc")  # the same hash each time: `run --from stage1` again
    kept = {p.name: (p / "notes.txt").read_text() for p in tmp_path.iterdir()}
    assert kept == {"stage1.stale-abc": "first", "stage1.stale-abc.2": "second", "stage1.stale-abc.3": "third"}


def test_from_after_until_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--from cams comes after --until stage1"):
        run_pipeline(tiny_config(), tmp_path / "r", progress=False, start="cams", until="stage1")
    assert not (tmp_path / "r").exists()
