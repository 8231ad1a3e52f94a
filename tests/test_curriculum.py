"""Curricula follow their documented rules; state round-trips mid-way."""

import pytest
import torch

from segmix.shuffle import (
    Level,
    LossCurriculum,
    MasteryCurriculum,
    SegMix,
    build_levels,
    create_curriculum,
    patch_ladder,
)


def test_patch_ladder_is_coarse_to_fine_divisors():
    assert patch_ladder(112, 14) == [56, 28, 16, 14]
    assert patch_ladder(224, 16, max_levels=3) == [112, 32, 16]
    with pytest.raises(ValueError, match="no divisor"):
        patch_ladder(17, 4)


def test_levels_step_ratio_within_patch_size():
    assert build_levels([56, 28], 0.25, 0.75, 3) == [
        Level(56, 0.25),
        Level(56, 0.5),
        Level(56, 0.75),
        Level(28, 0.25),
        Level(28, 0.5),
        Level(28, 0.75),
    ]


def _feedback(**kw):
    mixer = SegMix(56, 0.1)
    levels = build_levels([56, 28, 14], 0.25, 0.5, 2)
    return mixer, LossCurriculum(mixer, levels, advance=0.1, tighten=0.0, backoff=0.2, warmup=1, **kw)


def test_feedback_rule_on_a_scripted_loss_sequence():
    mixer, cur = _feedback()
    script = [1.0, 0.9, 0.85, 0.80, 0.60, 0.70, 0.75, 0.90, 0.85]
    actions = [cur.step(s).action for s in script]
    # warm-up; reference 0.9 at level 0; 0.85 > 0.81 hold; 0.80 <= 0.81 advance -> level 1;
    # 0.60 new reference; 0.70 hold (not >= 0.72); 0.75 >= 0.6*1.2 back -> level 0;
    # 0.90 reference; 0.85 > 0.81 hold
    assert actions == ["warmup", "hold", "hold", "advance", "hold", "hold", "back", "hold", "hold"]
    levels = [r.level for r in cur.history]
    assert levels == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert (mixer.patch_size, mixer.ratio) == (56, 0.25)
    row = cur.history[3]
    assert row.threshold == pytest.approx(0.81) and row.patch_size == 56 and row.ratio == 0.5


def test_threshold_tightens_with_steps():
    mixer = SegMix(56, 0.1)
    cur = LossCurriculum(mixer, build_levels([56], 0.2, 0.2, 1), advance=0.05, tighten=0.5, warmup=0)
    cur.step(1.0)
    assert cur.threshold(1) == pytest.approx(1 - 0.05 * 1.5)
    assert cur.threshold(10) == pytest.approx(1 - 0.05 * 6)
    assert cur.threshold(1000) == pytest.approx(0.1)  # capped at 90 % improvement


def test_score_mode_uses_one_minus_score_and_top_level_holds():
    mixer = SegMix(56, 0.1)
    cur = LossCurriculum(mixer, build_levels([56, 28], 0.5, 0.5, 1), mode="score", advance=0.1, tighten=0, warmup=0)
    assert [cur.step(s).action for s in (0.5, 0.6, 0.7, 0.9)] == ["hold", "advance", "hold", "advance"][:3] + ["hold"]
    assert cur.level == 1 and cur.history[1].error == pytest.approx(0.4)


def test_warmup_off_disables_shuffle_until_warmup_ends():
    mixer = SegMix(56, 0.3)
    cur = LossCurriculum(mixer, build_levels([56, 28], 0.25, 0.5), warmup=2, warmup_off=True)
    assert mixer.ratio == 0.0
    cur.step(1.0)
    assert mixer.ratio == 0.0
    cur.step(0.9)
    assert mixer.ratio == 0.25


def test_save_load_mid_way_gives_identical_later_decisions():
    script = [1.0, 0.9, 0.85, 0.80, 0.60, 0.70, 0.75, 0.90, 0.85, 0.7, 0.5, 0.45]
    _, full = _feedback()
    for s in script:
        full.step(s)
    _, first = _feedback()
    for s in script[:5]:
        first.step(s)
    state = first.state_dict()
    mixer, resumed = _feedback()
    resumed.load_state_dict(state)
    assert (mixer.patch_size, mixer.ratio) == (first.mixer.patch_size, first.mixer.ratio)
    for s in script[5:]:
        resumed.step(s)
    assert resumed.history == full.history


def test_load_rejects_other_curriculum_or_ladder():
    _, cur = _feedback()
    sched = create_curriculum("scheduled", SegMix(), build_levels([56, 28, 14], 0.25, 0.5, 2), total_steps=4)
    with pytest.raises(ValueError, match="not 'loss'"):
        cur.load_state_dict(sched.state_dict())
    other = LossCurriculum(SegMix(), build_levels([56], 0.25, 0.5))
    with pytest.raises(ValueError, match="another ladder"):
        other.load_state_dict(cur.state_dict())


def test_scheduled_is_linear_and_fixed_holds():
    levels = build_levels([56, 28], 0.25, 0.5, 2)  # 4 levels
    mixer = SegMix()
    sched = create_curriculum("scheduled", mixer, levels, total_steps=8)
    got = [sched.step().level for _ in range(8)]
    assert got == [0, 1, 1, 2, 2, 3, 3, 3]
    fixed = create_curriculum("fixed", mixer, levels, level=2)
    assert [fixed.step(0.5).action for _ in range(3)] == ["hold"] * 3
    assert (mixer.patch_size, mixer.ratio) == (28, 0.25)


def test_non_finite_signal_is_refused():
    _, cur = _feedback()
    with pytest.raises(ValueError, match="finite"):
        cur.step(float("nan"))


def test_history_rows_are_typed_and_round_trip_through_csv(tmp_path):
    from segmix.shuffle import HistoryRow, read_history_csv, write_history_csv

    cur = LossCurriculum(SegMix(), build_levels([56, 28], 0.25, 0.5), warmup=1)
    for s in (1.0, 0.9, 0.5):
        assert isinstance(cur.step(s), HistoryRow)
    write_history_csv(cur.history, tmp_path / "c.csv")
    assert read_history_csv(tmp_path / "c.csv") == cur.history
    assert cur.history[0].action == "warmup" and cur.history[0].threshold is None


def test_the_api_and_the_config_share_the_rules_defaults():
    from segmix.config import CurriculumConfig

    cur = LossCurriculum(SegMix(), build_levels([56], 0.25, 0.5))
    cfg = CurriculumConfig()
    keys = ("mode", "advance", "tighten", "backoff", "warmup", "warmup_off")
    assert cfg.knobs("loss") == {k: getattr(cur, k) for k in keys}
    assert cur.warmup_off is True
    mastery = MasteryCurriculum(SegMix(), build_levels([56], 0.25, 0.5))
    keys = ("mastery", "collapse", "min_gain", "warmup", "warmup_off")
    assert cfg.knobs("mastery") == {k: getattr(mastery, k) for k in keys}


def test_a_checkpoint_of_the_loss_rule_under_its_earlier_name_resumes():
    _, cur = _feedback()
    for s in (1.0, 0.8):
        cur.step(s)
    state = {**cur.state_dict(), "name": "feedback"}
    _, again = _feedback()
    again.load_state_dict(state)
    assert again.history == cur.history and again.ref == cur.ref


def test_ladders_can_align_with_vit_tokens():
    assert patch_ladder(224, 14, 3, multiple_of=14) == [112, 28, 14]
    assert patch_ladder(224, 16, 3, multiple_of=16) == [112, 32, 16]
    assert patch_ladder(112, 14, 3) == [56, 16, 14]  # the default (multiple_of=1) is unchanged
    with pytest.raises(ValueError, match="multiple of 14"):
        patch_ladder(100, 10, multiple_of=14)


def test_the_random_level_plug_in_draws_every_level_uniformly_and_the_same_numbers_at_any_level(bench_module):
    """benchmarks/random_level.py: a control registered from outside the product, per batch."""
    from segmix.shuffle import list_methods

    bench_module("random_level")
    assert "shuffle-random-level" in list_methods()
    levels = build_levels([56, 28, 14], 0.25, 0.5, 2)  # 6 levels
    mixer = SegMix()
    cur = create_curriculum("random-level", mixer, levels)
    assert cur.current == levels[-1]  # what the history records: the finest level
    g, drawn = torch.Generator().manual_seed(0), []
    for _ in range(6000):
        cur.before_batch(g)
        drawn.append(levels.index(Level(mixer.patch_size, mixer.ratio)))
    assert all(850 < drawn.count(k) < 1150 for k in range(6))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(20):
        cur.before_batch(g1)
        torch.rand(2, generator=g2)  # two numbers a batch, whatever it draws
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert cur.step(0.5).action == "hold" and cur.current == levels[-1]
    assert (mixer.patch_size, mixer.ratio) == (14, 0.5)  # a step puts the mixer back at the recorded level
