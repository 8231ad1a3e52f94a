"""Files segmix did not write are untrusted (issue 44): run folders, model packages, inputs and
options from someone else. Each case runs ``segmix`` in a subprocess and checks the exit code,
the one ``error:`` line naming the thing, the sha256 of every file outside ``--out`` before and
after, and (for pickles) the marker file that code run from the file would create.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segmix.data.io import write_image
from segmix.data.synth import SynthConfig, generate
from segmix.errors import ModelFileError
from segmix.models import load_segmenter
from segmix.models.package import CONFIG_FILE, write_package
from tests.test_cli_outputs import SPEC, _cohort, _model, _said
from tests.test_cli_user_errors import assert_user_error, digest, segmix
from tests.test_predict import make_slide

pytestmark = pytest.mark.slow
TINY = ["--set", "train.epochs=1", "--set", "train.image_size=32", "--set", "train.batch_size=8"]


class _Planted:
    """Unpickling this runs ``touch <marker>``: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _outside(root: Path, out: Path) -> dict[str, str]:
    return {p: h for p, h in digest(root).items() if not (root / p).is_relative_to(out)}


@pytest.fixture(scope="module")
def data(module_tmp) -> Path:
    root = module_tmp("untrusted") / "data"
    generate(SynthConfig(tile_size=32, n_train=16, n_val=4, n_test=4, seed=0), root, workers=1)
    return root


@pytest.mark.parametrize("command", ["train-cls", "train-seg"])
def test_a_planted_checkpoint_is_refused_and_never_unpickled(data, tmp_path, command):
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 0, "state_dict": {}, "x": _Planted(marker)}, out / "checkpoints" / "last.ckpt")
    masks = ["--masks", data / "train_gt"] if command == "train-seg" else []
    before = _outside(tmp_path, out)
    r = segmix(command, "--data", data, *masks, "--out", out, *TINY, "--set", "num_workers=0", cwd=tmp_path)
    assert_user_error(r, "last.ckpt", "refused to resume", only_line=False)
    assert not marker.exists()
    assert _outside(tmp_path, out) == before
    # plain data, but not a training checkpoint: refused too
    torch.save({"epoch": 0}, out / "checkpoints" / "last.ckpt")
    r = segmix(command, "--data", data, *masks, "--out", out, *TINY, "--set", "num_workers=0", cwd=tmp_path)
    assert_user_error(r, "last.ckpt", "not a training checkpoint", only_line=False)


def _package(folder: Path) -> Path:
    from segmix.config import Stage2Config
    from segmix.models import create_segmenter

    torch.manual_seed(0)
    model = create_segmenter("auto", "resnet18", SPEC.num_indices)
    config = Stage2Config(train={"image_size": 64}).model_dump(mode="json")
    payload = {"state_dict": model.state_dict(), "config": config, "spec": SPEC.model_dump(mode="json"), "stain": None}
    write_package(payload, "segmenter", folder)
    return folder


def _edit(doc: dict, change) -> dict:
    doc = json.loads(json.dumps(doc))
    change(doc)
    return doc


def _one_more_class(doc: dict) -> None:
    """A class added consistently (names, palette, background index): only the weights disagree."""
    doc["classes"] = [*doc["classes"], "extra"]
    doc["palette"] = [*doc["palette"], [1, 2, 3]]
    spec = doc["spec"]
    spec.update(classes=doc["classes"], palette=[*spec["palette"], [1, 2, 3]], background_index=5)
    doc["mask_indices"] = [*doc["classes"], "background"]


TAMPERED = {
    "no spec": (lambda d: d.pop("spec"), "spec: Field required"),
    "format_version as text": (lambda d: d.update(format_version="one"), "format_version"),
    "config a string": (lambda d: d.update(config="x"), "config: Input should be a valid dictionary"),
    "absurd input_size": (lambda d: d.update(input_size=10**9), "input_size"),
    "absurd image_size": (lambda d: d["config"]["train"].update(image_size=10**9), "config.train.image_size"),
    "stain without statistics": (lambda d: d.update(stain={"method": "macenko"}), "stain"),
    "stain of another shape": (
        lambda d: d.update(stain={"method": "reinhard", "fitted": {"target_means": [1], "target_stds": [1, 2, 3]}}),
        "target_means",
    ),
    "a class added": (lambda d: d.update(classes=[*d["classes"], "extra"]), "classes: 5 names, spec.classes 4"),
    "one class more": (_one_more_class, "predict 5 mask indices (classes and background), the config names 6"),
    "mask indices edited": (lambda d: d.update(mask_indices=["x"]), "mask_indices"),
    "truncated": (None, "unreadable package config"),
}


def _tampered(pkg: Path, folder: Path, name: str) -> Path:
    """A copy of the package ``pkg`` in ``folder`` with its config.json edited as ``TAMPERED[name]``."""
    change = TAMPERED[name][0]
    doc = json.loads((pkg / CONFIG_FILE).read_text())
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pkg, folder)
    (folder / CONFIG_FILE).write_text(json.dumps(doc)[:120] if change is None else json.dumps(_edit(doc, change)))
    return folder


@pytest.fixture(scope="module")
def package(module_tmp) -> Path:
    return _package(module_tmp("package") / "pkg")


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampered_package_configs_are_the_model_file_error_naming_the_key(package, tmp_path, name):
    edited = _tampered(package, tmp_path / "edited", name)
    with pytest.raises(ModelFileError) as err:
        load_segmenter(edited)
    message = str(err.value)
    assert str(edited) in message and TAMPERED[name][1] in message, message
    assert "\n" not in message and "validation error for" not in message


def test_tampered_packages_on_the_command_line_are_one_line_and_write_nothing(package, tmp_path):
    make_slide(tmp_path / "s.tif", width=256, height=192)
    for name in ("no spec", "absurd image_size", "one class more"):
        edited = _tampered(package, tmp_path / "edited", name)
        r = segmix("predict", "--model", edited, tmp_path / "s.tif", "--out", tmp_path / "o", cwd=tmp_path)
        assert_user_error(r, str(edited), TAMPERED[name][1])
        assert not (tmp_path / "o").exists(), name


def test_renamed_classes_in_a_package_are_honoured(tmp_path):
    pkg = _package(tmp_path / "pkg")
    doc = json.loads((pkg / CONFIG_FILE).read_text())
    renamed = ["tumour", "necrosis", "lymphocytes", "stroma"]
    (pkg / CONFIG_FILE).write_text(json.dumps({**doc, "classes": renamed}))
    write_image(tmp_path / "t.png", np.full((64, 64, 3), 200, np.uint8))
    r = segmix("predict", "--model", pkg, tmp_path / "t.png", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    areas = (tmp_path / "o" / "t_areas.csv").read_text()
    assert all(name in areas for name in renamed) and "TE" not in areas


def test_export_never_writes_through_a_link_nor_deletes_a_users_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _model(run / "segmenter.pt", 0)  # a train-seg folder: a segmenter, no classifier
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = _package(tmp_path / "pkg")  # an earlier package ...
    (out / "classifier").symlink_to(outside, target_is_directory=True)  # ... whose classifier/ leads out
    before = _outside(tmp_path, out)
    r = segmix("export", run, "--out", out, cwd=tmp_path)
    assert_user_error(r, "classifier", "a link")
    assert _outside(tmp_path, out) == before and (out / "classifier").is_symlink()
    # an earlier package's classifier/ with a file of the user's: the package files go, the file stays
    (out / "classifier").unlink()
    _package(out / "classifier")
    doc = json.loads((out / "classifier" / CONFIG_FILE).read_text())
    (out / "classifier" / CONFIG_FILE).write_text(json.dumps({**doc, "kind": "classifier"}))
    (out / "classifier" / "notes.txt").write_text("mine")
    r = segmix("export", run, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "classifier").iterdir()) == ["notes.txt"]


def test_done_means_the_same_input_file_precision_and_outputs_on_disk(tmp_path):
    _model(tmp_path / "m.pt", 0)
    make_slide(tmp_path / "a.tif", width=256, height=192)
    write_image(tmp_path / "t.png", np.full((64, 64, 3), 200, np.uint8))
    out, a = tmp_path / "out", tmp_path / "a.tif"

    def predict(*args) -> str:
        r = segmix("predict", "--model", tmp_path / "m.pt", a, tmp_path / "t.png", *args, "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return f"{_said(r, a).split(': ', 1)[1]} / {_said(r, tmp_path / 't.png').split(': ', 1)[1]}"

    assert predict("--precision", "32") == "done / done"
    assert predict("--precision", "32") == "skipped / skipped (done before)"  # the same request twice
    (out / "a" / "a_classmap.png").unlink()
    (out / "t_overlay.png").unlink()
    assert predict("--precision", "32") == "done / done"  # an output lost: predicted again
    assert predict("--precision", "bf16") == "done / done"  # another precision
    time.sleep(0.01)
    make_slide(a, width=320, height=192)  # another slide of the same name
    write_image(tmp_path / "t.png", np.full((64, 64, 3), 100, np.uint8))
    assert predict("--precision", "bf16") == "done / done"
    assert _cohort(out)["a.tif"]["status"] == "done"
    assert json.loads((out / "a" / "a_summary.json").read_text())["level_size"] == [320, 192]


def _huge_tiff(path: Path, side: int, tile: int) -> None:
    """A TIFF header declaring ``side`` x ``side`` px in ``tile``-px tiles, with no pixels."""
    n = ((side + tile - 1) // tile) ** 2
    tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tags += [(277, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile), (324, 4, n, 4096), (325, 4, n, 4096)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    head = b"II*\x00" + struct.pack("<I", 8) + ifd
    path.write_bytes(head + b"\x00" * (8192 - len(head)))


def test_a_slide_header_declaring_too_much_is_refused_before_any_read(tmp_path):
    _model(tmp_path / "m.pt", 0)
    _huge_tiff(tmp_path / "huge.tif", 10**6, 16)
    _huge_tiff(tmp_path / "tiles.tif", 200_000, 16)
    make_slide(tmp_path / "a.tif", width=256, height=192)
    start = time.perf_counter()
    r = segmix("predict", "--model", tmp_path / "m.pt", tmp_path, "--out", tmp_path / "o", cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "2 of 3 slides could not be predicted" in r.stderr, r.stderr
    assert time.perf_counter() - start < 60
    rows = _cohort(tmp_path / "o")
    assert rows["a.tif"]["status"] == "done"
    assert "over the limit" in rows["huge.tif"]["status"] and "tiles" in rows["tiles.tif"]["status"]


def test_options_a_command_does_not_use_or_cannot_honour_are_refused(data, tmp_path):
    masks = tmp_path / "masks"
    _model(tmp_path / "seg.pt", 0, SPEC.model_copy(update={"mpp": None}))
    # relabel reads only its own keys: scales are its scales, a CAM key is refused naming the known ones
    relabel = ["relabel", "--model", tmp_path / "seg.pt", "--data", data, "--out", masks, "--set", "num_workers=0"]
    r = segmix(*relabel, "--set", "flip=false", cwd=tmp_path)
    assert_user_error(r, "--set flip=false", "unknown key", "scales")
    r = segmix(*relabel, "--set", "scales=[1.0]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((masks / "relabel_config.yaml").read_text())["scales"] == [1.0]
    common = ["train-cls", "--data", data, "--out", tmp_path / "r"]
    r = segmix(*common, "--set", "threads=99", cwd=tmp_path)
    assert_user_error(r, "--set threads=99", "99 threads", "cores")
    r = segmix(*common, "--set", "=5", cwd=tmp_path)
    assert_user_error(r, "--set =5", "no key")
    (tmp_path / "tag.yaml").write_text("train:\n  epochs: !!python/object/apply:os.system ['touch pwned']\n")
    r = segmix(*common, "--config", tmp_path / "tag.yaml", cwd=tmp_path)
    assert_user_error(r, "tag.yaml", "line 2", "python/object/apply")
    for value in ("-1", "0", "lots"):
        r = segmix(*common, cwd=tmp_path, env={"SEGMIX_MAX_PIXELS": value})
        assert_user_error(r, f"SEGMIX_MAX_PIXELS='{value}'", "positive")
    assert not (tmp_path / "r").exists() and not (tmp_path / "pwned").exists()


def test_input_names_too_long_for_the_file_system_are_one_line(tmp_path):
    _model(tmp_path / "m.pt", 0)
    long = tmp_path / f"{'x' * 245}.png"
    write_image(long, np.full((64, 64, 3), 200, np.uint8))
    r = segmix("predict", "--model", tmp_path / "m.pt", long, "--out", tmp_path / "o", cwd=tmp_path)
    assert_user_error(r, "245 bytes", "too long")
    assert not (tmp_path / "o").exists()


def test_pickle_marker_helper_runs_code_when_unpickled_with_full_pickle(tmp_path):
    """The planted file is a real threat: a full unpickle runs it (the check above is not vacuous)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()
