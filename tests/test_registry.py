"""A curriculum rule defined here alone, registered with the decorator, trains by its name."""

import csv
import logging

import pytest
from pydantic import Field

from segmix.config import ConfigError, Stage1Config, load_config
from segmix.section import Section
from segmix.shuffle import Curriculum, HistoryRow, list_methods, register_curriculum

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class LeapKnobs(Section):
    leap: int = Field(1, ge=1, description="levels to climb each epoch")


@register_curriculum(
    "leap",
    LeapKnobs,
    signal="train_loss",
    description="climbs `leap` levels every epoch, whatever the signal",
    methods={"shuffle-leap": "the shuffle, climbing the ladder at a fixed pace"},
)
class LeapCurriculum(Curriculum):
    name = "leap"

    def __init__(self, mixer, levels, leap: int = 1) -> None:
        self.leap = leap
        super().__init__(mixer, levels)

    def step(self, signal: float) -> HistoryRow:
        self.level = min(self.level + self.leap, len(self.levels) - 1)
        return self._record(signal, "advance")


def test_the_rule_is_a_method_with_its_knobs_in_the_config():
    assert "shuffle-leap" in list_methods()
    cfg = load_config(Stage1Config, None, ["mixing.method=shuffle-leap", "curriculum.leap.leap=2"])
    assert cfg.curriculum.knobs("leap") == {"leap": 2}
    with pytest.raises(ConfigError, match="curriculum.leap: leap: Input should be greater than or equal to 1"):
        load_config(Stage1Config, None, ["curriculum.leap.leap=0"])
    with pytest.raises(ValueError, match="curriculum 'leap' is already registered"):
        register_curriculum("leap")(LeapCurriculum)


@pytest.mark.slow
def test_a_rule_defined_in_a_test_file_trains_one_stage1_epoch(tmp_path):
    from segmix.data.synth import SynthConfig, generate
    from segmix.train import train_classifier

    data = tmp_path / "data"
    generate(SynthConfig(n_train=16, n_val=4, n_test=2, tile_size=64, seed=2), data, workers=1)
    sets = ["model.backbone=resnet18", "train.image_size=64", "train.batch_size=8", "train.epochs=1", "num_workers=0"]
    sets += ["ladder.patch_min=16", "mixing.method=shuffle-leap", "curriculum.leap.leap=2"]
    train_classifier(load_config(Stage1Config, None, sets), data, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "curriculum.csv").open()))
    assert [(r["level"], r["action"]) for r in rows] == [("2", "advance")]
    assert float(rows[0]["signal"]) > 0  # the training loss it registered to read
