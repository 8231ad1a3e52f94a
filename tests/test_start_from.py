"""Stage 2's encoder started from stage 1's classifier (``stage2.model.start_from: classifier``)."""

import logging

import pytest
import torch

from segmix.config import Stage1Config
from segmix.data.synth import SynthConfig, generate
from segmix.errors import ConfigError
from segmix.models import CamClassifier, create_segmenter, encoder_from_classifier, load_segmenter, save_classifier
from segmix.train import Stage2Config, train_segmenter

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    torch.manual_seed(3)
    model = CamClassifier("resnet18", 4, False, None, 16, "avg")
    path = tmp_path_factory.mktemp("cls") / "classifier.pt"
    save_classifier(model, Stage1Config(model={"backbone": "resnet18"}), ["A", "B", "C", "D"], path)
    return path, model


def _conv_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if k.endswith("conv1.weight") or k.endswith("conv2.weight")}


def test_encoder_takes_every_backbone_tensor_of_the_classifier(classifier_file):
    path, classifier = classifier_file
    segmenter = create_segmenter("auto", "tu-resnet18", 5)
    copied = encoder_from_classifier(segmenter, "tu-resnet18", path)
    target = segmenter.encoder.model.state_dict()
    assert copied == len(target) > 50
    source = classifier.encoder.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in target.items())


def test_another_encoder_is_refused_naming_the_classifiers_backbone(classifier_file):
    path, _ = classifier_file
    with pytest.raises(ConfigError, match="tu-resnet18"):
        encoder_from_classifier(create_segmenter("auto", "tu-resnet34", 5), "tu-resnet34", path)


def test_start_from_and_the_classifier_argument_must_agree(tmp_path, classifier_file):
    cfg = Stage2Config(model={"encoder": "tu-resnet18", "start_from": "classifier"})
    with pytest.raises(ConfigError, match="needs stage 1's classifier"):
        train_segmenter(cfg, tmp_path, tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="start_from is weights"):
        train_segmenter(Stage2Config(), tmp_path, tmp_path, tmp_path / "out", classifier=classifier_file[0])


def test_training_starts_from_the_classifier(tmp_path, classifier_file):
    """With a vanishing learning rate the trained encoder's convolutions are still the classifier's;
    started from its own weights they are not."""
    path, classifier = classifier_file
    root = tmp_path / "data"
    generate(SynthConfig(n_train=8, n_val=2, n_test=1, tile_size=64, seed=2), root, workers=1)
    source = _conv_weights(classifier.encoder)
    for start, given in (("classifier", path), ("weights", None)):
        cfg = Stage2Config(
            model={"encoder": "tu-resnet18", "start_from": start},
            train={"image_size": 64, "batch_size": 4, "epochs": 1, "lr": 1e-12},
            num_workers=0,
        )
        out = train_segmenter(cfg, root, root / "train_gt", tmp_path / start, progress=False, classifier=given)
        trained = _conv_weights(load_segmenter(out).network.encoder.model)
        same = all(torch.allclose(v, source[k], atol=1e-6) for k, v in trained.items())
        assert len(trained) == len(source) and same == (start == "classifier")


def test_segmix_run_refuses_an_encoder_other_than_the_classifiers_before_any_training():
    from pathlib import Path

    from segmix.config import load_config
    from segmix.pipeline import RunConfig

    demo = Path(__file__).resolve().parents[1] / "src" / "segmix" / "configs" / "demo.yaml"
    with pytest.raises(ConfigError, match="needs stage2.model.encoder tu-efficientnet_lite0"):
        load_config(RunConfig, demo, ["stage2.model.start_from=classifier", "stage2.model.encoder=resnet18"])
    ok = load_config(RunConfig, demo, ["stage2.model.start_from=classifier"])
    assert ok.stage2.model.encoder == "tu-efficientnet_lite0"


def test_train_seg_without_the_classifier_is_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from segmix.cli import app

    out = tmp_path / "seg"
    args = [
        "train-seg",
        "-d",
        str(tmp_path),
        "-m",
        str(tmp_path),
        "-o",
        str(out),
        "--set",
        "model.start_from=classifier",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "needs stage 1's classifier.pt" in r.output and not out.exists()
