"""Outputs that belong to their request: cohorts that know their model, level and resolution,
and predictions that never replace a file segmix did not write (issue 23). Each case runs
``segmix`` in a subprocess, with the sha256 of every input and earlier output before and after.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from segmix.data.io import write_image
from segmix.data.synth import SynthConfig, dataset_spec
from segmix.models import create_segmenter, save_segmenter
from segmix.models.inference import model_fingerprint
from segmix.train import Stage2Config
from tests.test_cli_user_errors import assert_user_error, digest, segmix
from tests.test_predict import make_slide

pytestmark = pytest.mark.slow

SPEC = dataset_spec(SynthConfig()).model_copy(update={"mpp": 0.5})


def _model(path: Path, seed: int, spec=SPEC) -> str:
    """A small segmenter saved at ``path``; returns its fingerprint's first 12 characters."""
    import torch

    torch.manual_seed(seed)
    model = create_segmenter("auto", "resnet18", spec.num_indices)
    save_segmenter(model.state_dict(), Stage2Config(train={"image_size": 64}), spec, path)
    return model_fingerprint(model)[:12]


def _cohort(out: Path) -> dict[str, dict]:
    return {Path(r["slide"]).name: r for r in csv.DictReader((out / "cohort.csv").open())}


def _refused(tmp_path: Path, inputs: Path, out: Path, *needles: str) -> None:
    """``predict`` with the model ``m.pt`` refuses in one line holding ``needles``, changing nothing."""
    before = digest(tmp_path)
    r = segmix("predict", "--model", tmp_path / "m.pt", inputs, "--out", out, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert digest(tmp_path) == before


def _said(r, slide: str) -> str:
    return next(ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(str(slide) + ": "))


def test_cohort_rerun_with_another_model_level_or_mpp_redoes_and_the_table_keeps_every_slide(tmp_path):
    m1, m2 = _model(tmp_path / "m1.pt", 0), _model(tmp_path / "m2.pt", 1)
    other = SPEC.model_copy(update={"classes": ["tumour", "stroma", "other", "fat"]})
    m3 = _model(tmp_path / "m3.pt", 2, other)
    for name in ("a", "b"):
        make_slide(tmp_path / f"{name}.tif", width=256, height=192)
    inputs = digest(tmp_path)
    out, a = tmp_path / "out", tmp_path / "a.tif"

    def predict(model: str, *args) -> str:
        r = segmix("predict", "--model", tmp_path / model, *args, "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return _said(r, args[0]).split(": ", 1)[1]

    assert predict("m1.pt", a) == "done"
    assert predict("m1.pt", a) == "skipped"  # the same request: finished
    assert _cohort(out)["a.tif"]["model"] == m1
    assert predict("m2.pt", a) == "done"  # another model: predicted again
    assert _cohort(out)["a.tif"]["model"] == m2
    assert predict("m2.pt", a, "--level", "1") == "done"
    assert _cohort(out)["a.tif"]["level"] == "1"
    assert predict("m2.pt", a, "--mpp", "1.0") == "done"
    assert float(_cohort(out)["a.tif"]["mpp_read"]) == pytest.approx(1.0)
    assert predict("m2.pt", tmp_path / "b.tif") == "done"  # one more slide into the same folder
    assert set(_cohort(out)) == {"a.tif", "b.tif"}
    assert predict("m3.pt", a) == "done"  # a model of other class names
    rows = _cohort(out)
    assert rows["a.tif"]["model"] == m3 and rows["b.tif"]["model"] == m2
    assert rows["a.tif"]["tumour_mm2"] != "" and rows["a.tif"]["TE_mm2"] == ""
    assert rows["b.tif"]["TE_mm2"] != "" and rows["b.tif"]["tumour_mm2"] == ""
    assert digest(tmp_path) | inputs == digest(tmp_path)  # the inputs as they were


def test_predict_never_replaces_a_users_file_but_replaces_its_own(tmp_path):
    _model(tmp_path / "m.pt", 0)
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "x.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_areas.csv").write_text("my own notes\n")
    _refused(tmp_path, tmp_path / "in", out, "x_areas.csv", "not an output segmix wrote")
    (out / "x_areas.csv").unlink()
    (out / "cohort.csv").write_text("mine\n")  # images alone write no cohort table: left alone
    for _ in range(2):  # the second run replaces the first run's outputs
        r = segmix("predict", "--model", tmp_path / "m.pt", tmp_path / "in", "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (out / "cohort.csv").read_text() == "mine\n"
    (out / "x_mask.png").write_bytes((out / "x_overlay.png").read_bytes())  # the user edits an output
    _refused(tmp_path, tmp_path / "in", out, "x_mask.png", "not an output segmix wrote")


def test_slide_outputs_never_replace_a_users_files(tmp_path):
    _model(tmp_path / "m.pt", 0)
    make_slide(tmp_path / "s.tif", width=256, height=192)
    make_slide(tmp_path / "t.tif", width=256, height=192)
    out = tmp_path / "out"
    (out / "s").mkdir(parents=True)
    (out / "s" / "s.geojson").write_text("{}")
    (out / "t").write_text("a file where a slide's folder goes")
    _refused(tmp_path, tmp_path / "s.tif", out, "s.geojson", "not an output segmix wrote")
    _refused(tmp_path, tmp_path / "t.tif", out, str(out / "t"), "is a file")
    (out / "cohort.csv").write_text("mine\n")
    (out / "s" / "s.geojson").unlink()
    _refused(tmp_path, tmp_path / "s.tif", out, "cohort.csv", "not an output segmix wrote")


def test_a_slide_that_cannot_take_the_options_is_recorded_and_the_others_are_predicted(tmp_path):
    """Issue 44: a slide without a resolution, or without the level asked for, fails alone (its
    reason in cohort.csv, exit 1); options that concern every slide stay errors before any work."""
    _model(tmp_path / "m.pt", 0)
    make_slide(tmp_path / "a.tif", width=256, height=192)
    plain = np.full((192, 256, 3), 200, np.uint8)
    tifffile.imwrite(tmp_path / "nores.tif", plain, photometric="rgb")
    before = digest(tmp_path)
    model = ["predict", "--model", tmp_path / "m.pt", tmp_path / "a.tif", tmp_path / "nores.tif"]
    for folder, options, reason in (("o1", [], "records no microns per pixel"), ("o2", ["--level", "1"], "0..0")):
        r = segmix(*model, *options, "--out", tmp_path / folder, cwd=tmp_path)
        assert r.returncode == 1 and "1 of 2 slides could not be predicted" in r.stderr, r.stdout + r.stderr
        rows = _cohort(tmp_path / folder)
        assert rows["a.tif"]["status"] == "done" and reason in rows["nores.tif"]["status"], rows
        assert "Traceback" not in r.stdout + r.stderr
    r = segmix(*model[:4], "--mpp", "-1", "--out", tmp_path / "o3", cwd=tmp_path)
    assert_user_error(r, "--mpp -1")
    assert not (tmp_path / "o3" / "cohort.csv").exists() and not (tmp_path / "o3" / "a").exists()
    assert digest(tmp_path) | before == digest(tmp_path)  # the inputs as they were
    (tmp_path / "list.txt").write_text("a.tif\nsub\n")
    (tmp_path / "sub").mkdir()
    r = segmix(*model[:3], tmp_path / "list.txt", "--out", tmp_path / "o4", cwd=tmp_path)
    assert_user_error(r, "list.txt", "line 2", "folder")
    assert not (tmp_path / "o4").exists()


def _formats(folder: Path) -> np.ndarray:
    """One slide (0.5 um/px, red | blue over glass) in five sample formats; returns its pixels."""
    img = np.full((192, 256, 3), 248, np.uint8)
    img[:128, :128], img[:128, 128:] = (200, 40, 40), (40, 40, 200)
    res = {"resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER", "tile": (64, 64), "photometric": "rgb"}
    tifffile.imwrite(folder / "u8.tif", img, **res)
    tifffile.imwrite(folder / "u16.tif", img.astype(np.uint16) * 257, **res)
    tifffile.imwrite(folder / "f32.tif", img.astype(np.float32) / 255, **res)
    tifffile.imwrite(folder / "planar.tif", np.moveaxis(img, -1, 0), planarconfig="separate", **res)
    rgba = np.concatenate([img, np.full((192, 256, 1), 255, np.uint8)], axis=2)
    rgba[:128, 192:] = 0  # transparent: outside the scan
    tifffile.imwrite(folder / "rgba.tif", rgba, extrasamples=["unassalpha"], **res)
    return img


def test_slides_of_every_sample_format_are_converted_as_tiles_are(tmp_path):
    from segmix.data.io import read_image
    from segmix.infer import open_slide

    _model(tmp_path / "m.pt", 0)
    slides = tmp_path / "slides"
    slides.mkdir()
    img = _formats(slides)
    for name in ("u16", "f32", "planar"):
        np.testing.assert_array_equal(open_slide(slides / f"{name}.tif").read_region(0, 0, 0, 256, 192), img)
    region = open_slide(slides / "rgba.tif").read_region(0, 0, 0, 256, 192)
    assert (region[:128, 192:] == 255).all() and (region[:, :192] == img[:, :192]).all()
    tifffile.imwrite(tmp_path / "tile16.tif", img.astype(np.uint16) * 257, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "tile16.tif"), img)  # tiles: the same conversion
    r = segmix("predict", "--model", tmp_path / "m.pt", slides, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = _cohort(tmp_path / "out")
    assert {row["status"] for row in rows.values()} == {"done"}
    assert sum("16-bit image converted to 8 bits" in ln for ln in r.stderr.splitlines()) == 1  # once per slide
    maps = {
        n: np.asarray(Image.open(tmp_path / "out" / n / f"{n}_classmap.png")) for n in ("u8", "u16", "f32", "planar")
    }
    for name in ("u16", "f32", "planar"):
        np.testing.assert_array_equal(maps[name], maps["u8"])


def test_a_truncated_slide_in_a_cohort_prints_our_lines_only(tmp_path):
    _model(tmp_path / "m.pt", 0)
    make_slide(tmp_path / "a.tif", width=512, height=384)
    make_slide(tmp_path / "b.tif", width=512, height=384)
    data = (tmp_path / "b.tif").read_bytes()
    (tmp_path / "b.tif").write_bytes(data[: len(data) // 2])
    r = segmix(
        "predict", "--model", tmp_path / "m.pt", tmp_path / "a.tif", tmp_path / "b.tif", "--out", "o", cwd=tmp_path
    )
    assert r.returncode == 1 and _cohort(tmp_path / "o")["a.tif"]["status"] == "done"
    said = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert not [ln for ln in said if "tifffile" in ln or ln.lstrip().startswith(("ERROR", "WARNING"))], said
    assert any(ln.startswith(str(tmp_path / "b.tif") + ": ") and "b.tif" in ln for ln in said), said


def test_input_names_cannot_lead_outputs_out_of_the_folder_or_onto_the_cohort_table(tmp_path):
    _model(tmp_path / "m.pt", 0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("...tif", "cohort.csv.tif"):
        make_slide(inputs / name, width=256, height=192)
    write_image(inputs / "cohort.csv.png", np.full((64, 64, 3), 200, np.uint8))
    out = tmp_path / "box" / "out"
    out.mkdir(parents=True)
    outside = {p: h for p, h in digest(tmp_path).items() if not p.startswith("box/out/")}
    hidden = inputs / "...tif"  # a folder's hidden files are not read: named on its own
    r = segmix("predict", "--model", tmp_path / "m.pt", inputs, hidden, "--out", out, "--level", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    after = digest(tmp_path)
    assert {p: h for p, h in after.items() if not p.startswith("box/out/")} == outside  # nothing written outside
    assert (out / "_..").is_dir() and (out / "_cohort.csv").is_dir() and (out / "_cohort.csv_mask.png").is_file()
    rows = _cohort(out)
    assert {rows[s]["status"] for s in ("...tif", "cohort.csv.tif")} == {"done"}
