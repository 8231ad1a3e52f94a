"""The command line as a user meets it: each case runs ``segmix`` in a subprocess.

User errors must end with exit code 2 and one line naming the file, folder or key; nothing the
user had may be overwritten; normal runs print our progress and results, not library noise.
The cases are those found by trying segmix as a new user (issue 11), each reproduced here.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmix.data.io import write_image, write_mask
from segmix.data.synth import SynthConfig, generate
from segmix.pseudo import CamConfig, generate_pseudo_masks
from segmix.train import Stage1Config, Stage2Config, train_classifier, train_segmenter

TINY = ["--set", "train.epochs=1", "--set", "train.image_size=32", "--set", "train.batch_size=8"]

# Every test here trains models or runs the command line in subprocesses.
pytestmark = pytest.mark.slow


def segmix(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SEGMIX_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "segmix.cli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]


def assert_user_error(r: subprocess.CompletedProcess, *needles: str, only_line: bool = True) -> str:
    """Exit 2, no traceback, the error is one line holding every needle; returns it."""
    out = lines(r)
    assert r.returncode == 2, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stdout + r.stderr
    errors = [ln for ln in out if ln.startswith("error: ")]
    assert len(errors) == 1, out
    if only_line:
        assert out == errors, out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(module_tmp) -> dict[str, Path]:
    """A tiny synthetic dataset, a classifier, its pseudo masks and a segmenter, made once."""
    base = module_tmp("cli")
    data = base / "data"
    generate(SynthConfig(tile_size=32, n_train=24, n_val=4, n_test=4, seed=0), data, workers=1)
    s1 = Stage1Config(train={"epochs": 1, "image_size": 32, "batch_size": 8}, num_workers=0)
    classifier = train_classifier(s1, data, base / "cls", progress=False)
    generate_pseudo_masks(classifier, data, base / "cams", CamConfig(scales=[1.0], flip=False))
    s2 = Stage2Config(train={"epochs": 1, "image_size": 32, "batch_size": 8}, num_workers=0)
    segmenter = train_segmenter(s2, data, base / "cams" / "masks", base / "seg", progress=False)
    return {
        "base": base,
        "data": data,
        "classifier": classifier,
        "masks": base / "cams" / "masks",
        "segmenter": segmenter,
    }


def copy_data(world, dest: Path) -> Path:
    import shutil

    shutil.copytree(world["data"], dest)
    return dest


# --- data lost or wrong, silently --------------------------------------------------------------
def test_predict_never_replaces_an_input(world, tmp_path):
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    write_image(folder / "a.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    write_image(folder / "a_mask.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    before = digest(folder)
    r = segmix("predict", "--checkpoint", world["segmenter"], folder, "--out", folder, cwd=tmp_path)
    assert_user_error(r, "a_mask.png", "would replace the input")
    assert digest(folder) == before
    # into a folder of its own, both inputs are predicted and the inputs stay as they were
    r = segmix("predict", "--checkpoint", world["segmenter"], folder, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert digest(folder) == before
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"a_mask.png", "a_mask_mask.png", "a_areas.csv"}


def test_predict_refuses_two_inputs_with_one_output_name(world, tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("pin", "other"):
        write_image(tmp_path / sub / "ok.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    r = segmix(
        "predict", "--checkpoint", world["segmenter"], "pin/ok.png", "other/ok.png", "--out", "pout", cwd=tmp_path
    )
    assert_user_error(r, "ok_mask.png", "pin/ok.png", "other/ok.png", "separate --out")
    assert not (tmp_path / "pout").exists()


def test_stage_command_rerun_with_another_config_is_refused(world, tmp_path):
    run = tmp_path / "R"
    r = segmix("train-cls", "--data", world["data"], "--out", run, *TINY, "--set", "num_workers=0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = digest(run)
    import torch

    saved = torch.load(run / "classifier.pt", weights_only=True)
    r = segmix(
        "train-cls",
        "--data",
        world["data"],
        "--out",
        run,
        *TINY,
        "--set",
        "train.lr=0.5",
        "--set",
        "seed=7",
        "--set",
        "mixing.method=none",
        cwd=tmp_path,
    )
    assert_user_error(r, str(run), "another config", "lr: 0.001 -> 0.5", "seed: 0 -> 7", "method")
    r = segmix(
        "train-cls", "--data", world["data"], "--out", run, *TINY, "--set", "model.backbone=resnet34", cwd=tmp_path
    )
    assert_user_error(r, "backbone: 'resnet18' -> 'resnet34'")
    assert digest(run) == before
    # the same config (workers may differ) resumes: nothing left to train, same weights
    r = segmix("train-cls", "--data", world["data"], "--out", run, *TINY, "--set", "num_workers=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    resumed = torch.load(run / "classifier.pt", weights_only=True)
    assert resumed["config"]["num_workers"] == 1
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in saved["state_dict"].items())


# --- one line instead of a traceback -----------------------------------------------------------
def test_bad_tile_in_a_dataloader_worker_is_one_line(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    tile = sorted((data / "train").iterdir())[5]
    tile.write_bytes(tile.read_bytes()[:70])
    r = segmix("train-cls", "--data", data, "--out", tmp_path / "R", *TINY, "--set", "num_workers=2", cwd=tmp_path)
    assert_user_error(r, tile.name, "corrupt or truncated", only_line=False)


def test_bad_pseudo_mask_in_a_dataloader_worker_is_one_line(world, tmp_path):
    import shutil

    masks = tmp_path / "masks"
    shutil.copytree(world["masks"], masks)
    bad = sorted(masks.iterdir())[3]
    write_mask(bad, np.zeros((20, 20), np.uint8), [(0, 0, 0)] * 5)
    r = segmix(
        "train-seg",
        "--data",
        world["data"],
        "--masks",
        masks,
        "--out",
        tmp_path / "S",
        *TINY,
        "--set",
        "num_workers=2",
        cwd=tmp_path,
    )
    assert_user_error(r, bad.name, "mask is 20x20", only_line=False)


def test_val_split_without_masks(world, tmp_path):
    import shutil

    data = copy_data(world, tmp_path / "d")
    shutil.rmtree(data / "val" / "mask")
    r = segmix("train-cls", "--data", data, "--out", tmp_path / "R", *TINY, cwd=tmp_path)
    assert_user_error(r, str(data / "val" / "mask"), "no masks for the val split")
    r = segmix("info", data, "--check", cwd=tmp_path)
    assert r.returncode == 1 and "val/mask: folder does not exist" in r.stdout


def test_val_miou_feedback_without_a_val_split(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    spec = (data / "dataset.yaml").read_text()
    (data / "dataset.yaml").write_text(spec.replace("  val: val\n", "  val: null\n"))
    sets = ["--set", "mixing.method=segmix-gain"]
    r = segmix("train-cls", "--data", data, "--out", tmp_path / "R", *TINY, *sets, cwd=tmp_path)
    assert_user_error(r, "curriculum.signal val_miou", str(data), "no val split with masks")
    assert not (tmp_path / "R" / "checkpoints").exists()


def _bad_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    found = {
        "a file": (blocker, "not writable: it is a file"),
        "under a file": (blocker / "sub", "not writable: it lies under"),
    }
    readonly = Path("/proc/segmix-out")  # no folder can be made there, even by root
    found["read-only"] = (readonly, "not writable (")
    return found


@pytest.mark.parametrize(
    "command", ["train-cls", "train-seg", "cams", "evaluate", "predict", "score-masks", "synth", "run"]
)
def test_unusable_output_folders(world, tmp_path, command):
    for _what, (out, needle) in _bad_outputs(tmp_path).items():
        args = {
            "train-cls": ["train-cls", "--data", world["data"], "--out", out, *TINY],
            "train-seg": ["train-seg", "--data", world["data"], "--masks", world["masks"], "--out", out, *TINY],
            "cams": ["cams", "--classifier", world["classifier"], "--data", world["data"], "--out", out],
            "evaluate": ["evaluate", "--checkpoint", world["segmenter"], "--data", world["data"], "--out", out],
            "predict": ["predict", "--checkpoint", world["segmenter"], world["data"] / "test" / "img", "--out", out],
            "score-masks": [
                "score-masks",
                world["masks"],
                world["masks"],
                "--dataset",
                world["data"],
                "--json",
                out / "s.json",
            ],
            "synth": ["synth", "--out", out, "--train", "4"],
            "run": ["run", "configs/demo.yaml", "--out", out],
        }[command]
        r = segmix(*args, cwd=Path(__file__).parents[1] if command == "run" else tmp_path)
        assert_user_error(r, str(out), needle)


def test_unknown_model_names_and_unreadable_configs(world, tmp_path):
    out = tmp_path / "R"
    r = segmix("train-cls", "--data", world["data"], "--out", out, "--set", "model.backbone=resnt18", cwd=tmp_path)
    assert_user_error(r, "--set model.backbone=resnt18", "unknown timm model 'resnt18'", "resnet18")
    assert not out.exists()
    r = segmix(
        "train-seg",
        "--data",
        world["data"],
        "--masks",
        world["masks"],
        "--out",
        out,
        "--set",
        "model.encoder=resnt18",
        cwd=tmp_path,
    )
    assert_user_error(r, "--set model.encoder=resnt18", "unknown smp encoder")
    assert not out.exists()
    binary = tmp_path / "cfg.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    r = segmix("train-cls", "--data", world["data"], "--out", out, "--config", binary, cwd=tmp_path)
    assert_user_error(r, str(binary), "not a text file")


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_huge_image_header_and_the_pixel_limit(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    victim = sorted((data / "train").iterdir())[0]
    _png_header_only(victim, 20000, 20000)
    r = segmix("info", data, cwd=tmp_path)
    assert_user_error(r, victim.name, "400,000,000 pixels", "178,956,970", "--max-pixels")
    r = segmix("cams", "--classifier", world["classifier"], "--data", data, "--out", tmp_path / "c", cwd=tmp_path)
    assert_user_error(r, victim.name, "over the limit", only_line=False)
    # raised, the header passes and the (truncated) pixel data is what fails
    r = segmix("--max-pixels", "500000000", "info", data, "--check", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "corrupt or truncated" in r.stdout and victim.name in r.stdout


def test_symlink_loop_and_dangling_link(world, tmp_path):
    import shutil

    data = copy_data(world, tmp_path / "d")
    shutil.rmtree(data / "train_gt")  # so the linked tiles are read, not left out for want of truth
    (data / "train" / "loop-[1 0 0 0].png").symlink_to("loop-[1 0 0 0].png")
    (data / "train" / "gone-[1 0 0 0].png").symlink_to(tmp_path / "nowhere.png")
    r = segmix("info", data, "--check", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stderr
    problems = [ln for ln in r.stdout.splitlines() if ln.startswith("problem:")]
    assert any("loop-[1 0 0 0].png: cannot read" in p for p in problems), problems
    assert any("gone-[1 0 0 0].png: cannot read" in p for p in problems), problems


def test_score_masks_user_errors(world, tmp_path):
    masks, data = world["masks"], world["data"]
    r = segmix("score-masks", masks, masks, "--preset", "foo", cwd=tmp_path)
    assert_user_error(r, "--preset foo: unknown preset", "luad-histoseg")
    r = segmix("score-masks", tmp_path / "nope", masks, "--dataset", data, cwd=tmp_path)
    assert_user_error(r, str(tmp_path / "nope"), "folder does not exist")
    r = segmix("score-masks", masks, masks, cwd=tmp_path)
    assert_user_error(r, "--dataset", "--preset")
    r = segmix(
        "score-masks", masks, data / "train_gt", "--dataset", data, "--json", tmp_path / "new" / "s.json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new" / "s.json").is_file()
    truth = tmp_path / "glass"  # truth holding only the excluded index: nothing to score
    for mask in masks.iterdir():
        write_mask(truth / mask.name, np.full((32, 32), 4, np.uint8), dataset_spec_palette())
    before = digest(tmp_path)
    r = segmix("score-masks", masks, truth, "--dataset", data, "--json", tmp_path / "new" / "s.json", cwd=tmp_path)
    assert_user_error(r, str(truth), "no pixel to score", "background (excluded)")
    assert digest(tmp_path) == before


def dataset_spec_palette() -> list[tuple[int, int, int]]:
    from segmix.data.synth import dataset_spec

    return dataset_spec(SynthConfig()).palette


# --- words ------------------------------------------------------------------------------------
def test_file_names_with_brackets_are_printed_as_they_are(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    first = sorted((data / "train").iterdir())[0]
    odd = data / "train" / "train_00000-[a b c d].png"
    first.rename(odd)
    r = segmix("info", data, cwd=tmp_path)
    assert_user_error(r, "train_00000-[a b c d].png: malformed label '[a b c d]'")
    odd.rename(data / "train" / "[red]x-[1 0 1 1].png")
    r = segmix("info", data, cwd=tmp_path)
    assert_user_error(r, "/train/[red]x-[1 0 1 1].png: no mask", "looked for [red]x-[1 0 1 1].png or [red]x.png")


def test_info_check_lists_label_and_mask_problems_together(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    files = sorted((data / "train").iterdir())
    files[0].rename(data / "train" / "nolabel.png")
    files[1].rename(files[1].with_name(files[1].name.replace("[", "[1 ")))
    (data / "train_gt" / files[2].name).unlink()
    (data / "test" / "mask" / sorted((data / "test" / "img").iterdir())[0].name).unlink()
    r = segmix("info", data, "--check", cwd=tmp_path)
    problems = [ln for ln in r.stdout.splitlines() if ln.startswith("problem:")]
    assert r.returncode == 1 and "error" not in r.stderr, r.stderr
    # renamed tiles lose their truth too: 2 label problems + 4 missing masks, one line each
    assert len(problems) == 6, problems
    assert sum("nolabel.png: no image-level label" in p for p in problems) == 1
    assert sum("has 5 entries" in p for p in problems) == 1
    assert sum("no mask for this image" in p for p in problems) == 4
    assert sum(files[2].name in p for p in problems) == 1


def test_wrong_words_fixed(world, tmp_path):
    r = segmix(
        "train-cls", "--data", world["data"], "--out", tmp_path / "R", "--set", "train.epochs=zero", cwd=tmp_path
    )
    assert_user_error(r, "--set train.epochs=zero: train.epochs:")
    r = segmix("train-cls", "--data", world["data"], "--out", tmp_path / "R", "--set", "epoch=3", cwd=tmp_path)
    assert_user_error(r, "--set epoch=3: epoch: unknown key")
    r = segmix("synth", "--out", tmp_path / "s", "--train", "0", "--size", "8", cwd=tmp_path)
    line = assert_user_error(r, "--train:", "--size:")
    assert "n_train" not in line and "tile_size" not in line


def test_float_tiff_is_scaled_with_a_warning(tmp_path, caplog):
    from segmix.data.io import read_image

    path = tmp_path / "f.tif"
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F").save(path)
    with caplog.at_level("WARNING"):
        arr = read_image(path)
    assert arr.dtype == np.uint8 and arr.shape == (64, 64, 3) and arr.max() == 255 and arr.min() == 0
    assert "f.tif: float image converted to 8 bits ([0, 1] scaled by 255)" in caplog.text


def test_train_truth_named_without_the_label(world, tmp_path):
    data = copy_data(world, tmp_path / "d")
    for mask in (data / "train_gt").iterdir():
        mask.rename(mask.with_name(mask.name.split("-[")[0] + ".png"))
    r = segmix(
        "cams",
        "--classifier",
        world["classifier"],
        "--data",
        data,
        "--out",
        tmp_path / "c",
        "--set",
        "scales=[1.0]",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "pseudo masks vs truth" in r.stdout


def test_normal_runs_print_no_library_noise(tmp_path):
    r = segmix(
        "demo",
        "--out",
        tmp_path / "demo",
        "--set",
        "synth.n_train=24",
        "--set",
        "synth.n_val=4",
        "--set",
        "synth.n_test=4",
        "--set",
        "synth.tile_size=32",
        "--set",
        "stage1.train.epochs=1",
        "--set",
        "stage1.train.image_size=32",
        "--set",
        "stage1.train.batch_size=8",
        "--set",
        "stage2.train.epochs=1",
        "--set",
        "stage2.train.image_size=32",
        "--set",
        "stage2.train.batch_size=8",
        "--set",
        "report.gallery=1",
        "--set",
        "report.mixed=1",
        cwd=tmp_path,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    for noise in (
        "Tip",
        "litlogger",
        "litmodels",
        "deprecated",
        "weights_only",
        "UserWarning",
        "INFO",
        "GPU available",
    ):
        assert noise not in text, (noise, text)
    assert "pseudo masks mIoU" in text and "report:" in text
    r = segmix(
        "synth",
        "--out",
        tmp_path / "s",
        "--train",
        "4",
        "--val",
        "0",
        "--test",
        "0",
        "--size",
        "32",
        "--no-sheet",
        "-v",
        cwd=tmp_path,
    )
    assert r.returncode == 0  # -v is accepted after the sub-command as well as before it


def test_help_and_config_show(tmp_path):
    for command in ("evaluate", "synth", "info", "predict"):
        r = segmix(command, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "<bool>" not in r.stdout, r.stdout
    assert "--run" in segmix("predict", "--help", cwd=tmp_path).stdout
    r = segmix("config", "show", "demo", "--set", "stage1.train.epochs=3", cwd=tmp_path)
    assert r.returncode == 0
    assert "  epochs: 3" in r.stdout and "backbone: efficientnet_lite0" in r.stdout and "# " in r.stdout
    r = segmix("config", "show", "nope", cwd=tmp_path)
    assert_user_error(r, "nope", "demo, cpu, luad-histoseg")
    for command in ("run", "predict", "score-masks", "ablate", "train-cls", "config show"):
        r = segmix(*command.split(), "--help", cwd=tmp_path)
        assert r.returncode == 0 and not re.search(r"<list\[|\{\w+\}", r.stdout), r.stdout
    assert "Usage: segmix run [OPTIONS] CONFIG" in segmix("run", "--help", cwd=tmp_path).stdout
    assert "--set KEY=VALUE" in segmix("train-cls", "--help", cwd=tmp_path).stdout


def test_usage_errors_are_one_line(tmp_path):
    r = segmix("predict", "x.png", "--out", "o", "--overlap", "2", cwd=tmp_path)
    assert_user_error(r, "segmix predict", "--overlap", "0.9")
    r = segmix("predict", "x.png", cwd=tmp_path)
    assert_user_error(r, "Missing option", "--out")
    r = segmix("synth", "--out", "s", "--size", "abc", cwd=tmp_path)
    assert_user_error(r, "--size", "integer")
    r = segmix("nope", cwd=tmp_path)
    assert_user_error(r, "No such command", "nope")
    assert not list(tmp_path.iterdir())


def test_unknown_keys_set_inside_a_new_section_are_blamed_on_the_set(tmp_path):
    (tmp_path / "c.yaml").write_text("stage1:\n  train: {epochs: 1}\n")
    r = segmix("run", tmp_path / "c.yaml", "--out", "R", "--set", "stage1.foo.bar=1", cwd=tmp_path)
    assert_user_error(r, "--set stage1.foo.bar=1: stage1.foo: unknown key")
    r = segmix("train-cls", "--data", "d", "--out", "R", "--set", "foo.bar=1", cwd=tmp_path)
    assert_user_error(r, "--set foo.bar=1: foo: unknown key")
    r = segmix("run", tmp_path / "c.yaml", "--out", "R", "--set", "stage1.train={foo: 1}", cwd=tmp_path)
    assert_user_error(r, "--set stage1.train={foo: 1}: stage1.train.foo: unknown key")


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_stain_fit_to_glass_or_one_colour_is_refused(world, tmp_path, method):
    write_image(tmp_path / "white.png", np.full((64, 64, 3), 250, np.uint8))
    write_image(tmp_path / "pink.png", np.tile(np.array([200, 100, 160], np.uint8), (64, 64, 1)))
    before = digest(tmp_path)
    for reference, problem in (("white.png", "mostly glass"), ("pink.png", "one colour")):
        stain = ["--set", f"stain.method={method}", "--set", f"stain.reference={tmp_path / reference}"]
        r = segmix("train-cls", "--data", world["data"], "--out", tmp_path / "R", *TINY, *stain, cwd=tmp_path)
        assert_user_error(r, reference, "stain reference", problem)
        assert digest(tmp_path) == before


def test_weights_of_another_architecture_are_refused(world, tmp_path):
    import timm
    import torch

    torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "r34.pth")
    before = digest(tmp_path)
    weights = ["--set", "model.backbone=resnet18", "--set", f"model.weights={tmp_path / 'r34.pth'}"]
    r = segmix("train-cls", "--data", world["data"], "--out", tmp_path / "R", *TINY, *weights, cwd=tmp_path)
    assert_user_error(r, "r34.pth", "not the weights of resnet18", "96 not in resnet18")
    assert digest(tmp_path) == before


def test_truncated_tile_the_first_epoch_does_not_draw_is_named(world, tmp_path):
    from segmix.data.dataset import TileDataset
    from segmix.train.data import TrainTiles
    from segmix.train.stage1 import _train_sampler

    data = copy_data(world, tmp_path / "d")
    cfg = Stage1Config(train={"epochs": 1, "image_size": 32, "batch_size": 8})
    tiles = TileDataset(data, "train", with_masks=False)
    labels = np.stack([s.label for s in tiles.samples])
    sampler = _train_sampler(cfg, TrainTiles(tiles, 32), labels)
    drawn = set(list(sampler)[: len(sampler) // 8 * 8])
    undrawn = [s.image for i, s in enumerate(tiles.samples) if i not in drawn]
    assert undrawn  # single-label places and whole batches leave tiles out of the epoch
    undrawn[0].write_bytes(undrawn[0].read_bytes()[:100])
    r = segmix("train-cls", "--data", data, "--out", tmp_path / "R", *TINY, cwd=tmp_path)
    assert_user_error(r, undrawn[0].name, "truncated")
    assert not (tmp_path / "R" / "classifier.pt").exists()


def test_hub_weights_without_a_network_and_a_preset_not_named_are_one_line(world, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no cached weights, no network
    data = copy_data(world, tmp_path / "d")
    before = digest(tmp_path)
    pretrained = ["--set", "model.backbone=resnet18", "--set", "model.pretrained=true"]
    r = segmix("train-cls", "--data", data, "--out", tmp_path / "R", *TINY, *pretrained, cwd=tmp_path, env=offline)
    assert_user_error(r, "model.pretrained", "resnet18", "model.weights")
    masks = ["--masks", data / "train_gt", "--set", "model.encoder=resnet18", "--set", "model.encoder_weights=imagenet"]
    r = segmix("train-seg", "--data", data, "--out", tmp_path / "S", *TINY, *masks, cwd=tmp_path, env=offline)
    assert_user_error(r, "model.encoder_weights", "model.weights")
    assert digest(tmp_path) == before
    for preset in ("[luad-histoseg]", "{a: 1}"):
        (data / "dataset.yaml").write_text(f"preset: {preset}\n")
        r = segmix("info", data, cwd=tmp_path)
        assert_user_error(r, "dataset.yaml", "not a preset name", "luad-histoseg")
