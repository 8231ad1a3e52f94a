"""One precision rule (names, ``auto`` by device capability, autocast) and threads that fit the cores."""

import numpy as np
import pytest
import torch

import segmix.config.precision as precision_mod
from segmix.config import ConfigError, Stage1Config, Stage2Config, load_config
from segmix.config.precision import autocast, precision_name, resolve_precision
from segmix.config.run import RunConfig
from segmix.data.spec import PRESETS
from segmix.models import CamClassifier, segment
from segmix.pseudo.cam_masks import CamConfig, pseudo_masks_of
from segmix.runtime import fit_threads, plan_threads, usable_cores


@pytest.mark.parametrize(
    ("given", "name"),
    [(32, "32-true"), ("32", "32-true"), ("fp32", "32-true"), ("32-true", "32-true"), (16, "16-mixed")]
    + [("16-mixed", "16-mixed"), ("bf16", "bf16-mixed"), ("BF16-mixed", "bf16-mixed"), ("auto", "auto")],
)
def test_precision_names_and_integers_are_accepted(given, name):
    assert precision_name(given) == name
    assert Stage1Config(precision=given).precision == name
    assert Stage2Config(precision=given).precision == name


@pytest.mark.parametrize("bad", ["64", "half", True, 8, 1.5])
def test_unknown_precisions_are_refused_with_the_known_ones(bad):
    with pytest.raises(ValueError, match="auto, 32-true, 16-mixed, bf16-mixed"):
        precision_name(bad)


def test_set_with_a_yaml_integer_is_coerced_and_a_bad_value_names_the_flag():
    run = load_config(RunConfig, None, ["stage1.precision=32", "stage2.precision=bf16", "cams.precision=16"])
    assert (run.stage1.precision, run.stage2.precision, run.cams.precision) == ("32-true", "bf16-mixed", "16-mixed")
    assert run.evaluate.precision is None and CamConfig().precision is None  # null: the model's own
    with pytest.raises(ConfigError, match=r"--set stage1.precision=64.*unknown precision"):
        load_config(RunConfig, None, ["stage1.precision=64"])


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_cpu_infers_in_bf16_only_where_it_is_native_and_trains_in_fp32(monkeypatch, native, expected):
    monkeypatch.setattr(precision_mod, "native_bf16_cpu", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "cpu", training=True) == "32-true"
    assert resolve_precision("bf16", "cpu", training=True) == "bf16-mixed"  # asked for by name: kept
    assert resolve_precision(32, "cpu") == "32-true"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu_is_bf16_or_fp16_amp(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("auto", "cuda", training=True) == expected


def test_native_bf16_needs_the_hardware_and_avx512_kernels(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for hardware, capability, native in [(True, "AVX512", True), (True, "AVX2", False), (False, "AVX512", False)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda h=hardware: h)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert precision_mod.native_bf16_cpu() is native


def test_autocast_computes_in_the_named_dtype():
    a = torch.ones(4, 4)
    for name, dtype in [("32", torch.float32), ("bf16", torch.bfloat16)]:
        with autocast(name, "cpu"):
            assert (a @ a).dtype == dtype


class _DtypeSpy(torch.nn.Module):
    """A 1x1 conv recording the dtype its input reaches it in (what autocast gives a conv)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, out_channels, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return y


@pytest.mark.parametrize(("name", "dtype"), [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)])
def test_segment_runs_at_the_model_precision_or_the_one_given(name, dtype):
    model = _DtypeSpy(5)
    images = [np.zeros((16, 16, 3), np.uint8)]
    segment(model, images, Stage2Config(train={"image_size": 16}, precision=name), "cpu", 5)
    other = "bf16" if dtype == torch.float32 else "32"
    segment(model, images, Stage2Config(train={"image_size": 16}, precision=name), "cpu", 5, precision=other)
    assert model.seen[0] == dtype and model.seen[1] != dtype


@pytest.mark.parametrize(("name", "dtype"), [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)])
def test_pseudo_masks_run_at_the_precision_given(name, dtype):
    model = CamClassifier("resnet18", 4)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(o[-1].dtype))
    label = np.array([1, 0, 1, 0], np.uint8)
    group = [{"image": np.zeros((32, 32, 3), np.uint8), "label": label, "tissue": np.ones((32, 32), bool)}]
    masks, _, _ = pseudo_masks_of(model.eval(), group, CamConfig(), PRESETS["luad-histoseg"], torch.device("cpu"), name)
    assert masks.shape == (1, 32, 32) and seen and set(seen) == {dtype}


def test_threads_and_workers_never_exceed_the_cores():
    assert plan_threads(None, None, cores=2) == (0, 2)  # CPU training: every core a torch thread
    assert plan_threads(None, None, cores=1) == (0, 1)
    assert plan_threads(None, None, cores=16, gpu=True) == (8, 8)
    assert plan_threads(None, None, cores=2, gpu=True) == (1, 1)
    assert plan_threads(2, None, cores=2) == (2, 1)  # given workers: at least one thread is left
    assert plan_threads(None, 1, cores=2) == (0, 1)
    assert plan_threads(3, 5, cores=2) == (3, 5)  # both given: kept as they are
    for cores in range(1, 33):
        for gpu in (False, True):
            workers, threads = plan_threads(None, None, cores=cores, gpu=gpu)
            assert threads >= 1 and workers + threads <= cores


def test_fit_threads_sets_torch_and_reads_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert fit_threads(0, 1) == 0 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert fit_threads(None, None) == 0 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a count: the cores decide
        fit_threads(None, None)
        assert torch.get_num_threads() == usable_cores()
    finally:
        torch.set_num_threads(before)


def test_processes_of_a_node_share_its_cores(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = usable_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert usable_cores() == max(1, alone // 2)
