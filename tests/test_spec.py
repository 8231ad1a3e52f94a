import pytest

from segmix.data.spec import PRESETS, load_spec, resolve_spec
from segmix.errors import DatasetError
from tests.conftest import make_tree


@pytest.mark.parametrize("preset", list(PRESETS))
def test_layout_detects_preset(tmp_path, preset):
    root = make_tree(tmp_path / preset, preset)
    assert resolve_spec(root).name == preset


def test_dataset_yaml_wins_and_presets_extend(tmp_path):
    root = make_tree(tmp_path / "d", "luad-histoseg")
    (root / "dataset.yaml").write_text("preset: luad-histoseg\nname: mine\nglass_is_background: false\n")
    spec = resolve_spec(root)
    assert spec.name == "mine" and not spec.glass_is_background and spec.classes == ["TE", "NEC", "LYM", "TAS"]


def test_invalid_yaml_names_file_and_key(tmp_path):
    f = tmp_path / "dataset.yaml"
    f.write_text(
        "name: x\nclasses: [A, B]\npalette: [[0,0,0]]\nbackground_index: 2\nexclude_index: 2\n"
        "glass_is_background: true\n"
    )
    with pytest.raises(DatasetError, match="palette has 1 colours") as err:
        load_spec(f)
    assert str(f) in str(err.value)
    f.write_text("name: x\nclasses: A\n")
    with pytest.raises(DatasetError, match="classes"):
        load_spec(f)


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="matches no preset"):
        resolve_spec(tmp_path)
    with pytest.raises(DatasetError, match="unknown preset"):
        resolve_spec(tmp_path, "nope")


def test_background_index_of_a_tissue_class_is_refused(tmp_path):
    f = tmp_path / "dataset.yaml"
    f.write_text("preset: luad-histoseg\nbackground_index: 2\n")
    with pytest.raises(DatasetError, match="background_index 2 is the mask index of class LYM; use 4 or higher"):
        load_spec(f)


def test_ablate_methods_that_name_nothing_or_unknowns_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from segmix.cli import app
    from tests.test_pipeline import CONFIGS

    for given, said in ((",", "names no method"), ("none,nope", "unknown nope; known: none")):
        r = CliRunner().invoke(
            app, ["ablate", str(CONFIGS / "demo.yaml"), "--methods", given, "-o", str(tmp_path / "a")]
        )
        assert r.exit_code == 2 and said in r.output and "[]" not in r.output, r.output
    assert not (tmp_path / "a").exists()  # refused before any folder is made
