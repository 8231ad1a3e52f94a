"""The command line: synth -> info -> score-masks, and user errors as one line."""

import json

from typer.testing import CliRunner

from segmix.cli import app

runner = CliRunner()


def test_synth_then_info_then_score_masks(tmp_path):
    out = tmp_path / "syn"
    r = runner.invoke(
        app,
        ["synth", "--out", str(out), "--train", "12", "--val", "3", "--test", "3", "--size", "48", "--workers", "1"],
    )
    assert r.exit_code == 0, r.output
    assert (out / "contact_sheet.png").stat().st_size > 0 and (out / "dataset.yaml").is_file()
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0, r.output
    assert "train" in r.output and "12" in r.output and "48x48: 12" in r.output and "TE" in r.output
    # truth scored against itself is perfect
    r = runner.invoke(
        app,
        [
            "score-masks",
            str(out / "test" / "mask"),
            str(out / "test" / "mask"),
            "--dataset",
            str(out),
            "--json",
            str(tmp_path / "s.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s.json").read_text())["miou"] == 1.0


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a-[1 0 0 1].png").write_bytes(b"")
    r = runner.invoke(app, ["info", str(tmp_path)])
    assert r.exit_code == 2 and "empty file" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--classes", "TE,FAT"])
    assert r.exit_code == 2 and "no texture for classes" in r.output


def test_info_check_lists_every_problem(tmp_path):
    out = tmp_path / "syn"
    runner.invoke(
        app,
        [
            "synth",
            "--out",
            str(out),
            "--train",
            "4",
            "--val",
            "1",
            "--test",
            "1",
            "--size",
            "32",
            "--workers",
            "1",
            "--no-sheet",
        ],
    )
    files = sorted((out / "train").iterdir())
    files[0].write_bytes(files[0].read_bytes()[:60])
    files[1].write_text("junk")
    r = runner.invoke(app, ["info", str(out), "--check"])
    assert r.exit_code == 1
    assert r.output.count("problem:") == 2
    assert "corrupt or truncated" in r.output and "not an image" in r.output


def test_methods_lists_every_registered_method_with_its_rule_and_knobs():
    from segmix.shuffle import METHODS

    r = runner.invoke(app, ["methods"])
    assert r.exit_code == 0, r.output
    assert all(f"{name} " in r.output for name in METHODS)
    assert "rule mastery; reads cell_accuracy; knobs: stage1.mixing.segmix, stage1.curriculum.mastery" in r.output
