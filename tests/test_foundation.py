"""Foundation-model recipes, ViT CAMs, a frozen backbone, and stage 2 with a ViT encoder."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from segmix.config import Stage1Config, Stage2Config, load_config
from segmix.config.foundation import FOUNDATION_MODELS
from segmix.data.synth import SynthConfig, generate
from segmix.errors import ConfigError
from segmix.models import CamClassifier, create_segmenter, load_classifier, load_segmenter, segment
from segmix.models.foundation import create_foundation_encoder, timm_name

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.mark.parametrize("name", sorted(FOUNDATION_MODELS))
def test_each_recipe_builds_and_loads_the_weights_file_of_its_full_model(name, tmp_path):
    import timm

    recipe = FOUNDATION_MODELS[name]
    # The file a model card ships: the full model's tensors (final norm included), no "model." prefix.
    full = timm.create_model(timm_name(name), depth=1)
    state = {k: v.clone() for k, v in full.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    for file in ("model.safetensors", "pytorch_model.bin"):
        encoder = create_foundation_encoder(name, weights=tmp_path / file, depth=1)
        loaded = encoder.state_dict()
        assert all(torch.equal(loaded[f"model.{k}"], v) for k, v in state.items() if f"model.{k}" in loaded)
        grid = 224 // recipe.patch_size
        assert encoder(torch.rand(1, 3, 224, 224))[-1].shape[-2:] == (grid, grid)
    # Another model's file names what is missing.
    other = {k: v for k, v in state.items() if not k.startswith("blocks.0.attn")}
    torch.save(other, tmp_path / "other.bin")
    with pytest.raises(ValueError, match=f"not the weights of {name}.*huggingface.co/{recipe.hub}"):
        create_foundation_encoder(name, weights=tmp_path / "other.bin", depth=1)


def test_recipes_keep_their_normalisation_and_layers():
    model = CamClassifier("h-optimus-0", 2, depth=1)
    assert model.data_config["mean"] == FOUNDATION_MODELS["h-optimus-0"].mean
    uni2 = create_foundation_encoder("uni2-h", depth=1).model
    assert uni2.num_prefix_tokens == 9 and uni2.embed_dim == 1536  # class token + 8 registers
    assert type(uni2.blocks[0].mlp).__name__ == "GluMlp" and isinstance(
        uni2.blocks[0].mlp.act, torch.nn.SiLU
    )  # SwiGLUPacked
    virchow = create_foundation_encoder("virchow2", depth=1).model
    assert virchow.num_prefix_tokens == 5  # class token + 4 registers, dropped from the CAM grid


def test_vit_cams_are_the_patch_grid_and_finer_with_a_smaller_output_stride():
    x = torch.rand(2, 3, 64, 64)
    assert CamClassifier("vit_small_patch16_224", 3, output_stride=16).cams(x).shape == (2, 3, 4, 4)
    assert CamClassifier("vit_small_patch16_224", 3, output_stride=8).cams(x).shape == (2, 3, 8, 8)
    assert CamClassifier("uni", 3, depth=1).cams(torch.rand(1, 3, 112, 112)).shape == (1, 3, 7, 7)
    with pytest.raises(ValueError, match="fixed input size"):
        CamClassifier("h-optimus-0", 3, depth=1, output_stride=8)


def test_frozen_backbone_trains_the_head_and_the_last_blocks_only():
    model = CamClassifier("vit_small_patch16_224", 3)
    model.freeze(0)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    model = CamClassifier("vit_small_patch16_224", 3)
    model.freeze(2)
    trainable = {n.split(".")[3] for n, p in model.named_parameters() if p.requires_grad and ".blocks." in n}
    assert trainable == {"10", "11"}
    groups = model.param_groups(1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5] and len(groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="vision transformer"):
        CamClassifier("resnet18", 3).freeze(1)


@pytest.fixture(scope="module")
def tiles(module_tmp):
    root = module_tmp("syn")
    generate(SynthConfig(n_train=16, n_val=2, n_test=2, tile_size=64, seed=5), root, workers=1)
    return root


@pytest.mark.slow
def test_vit_classifier_trains_frozen_and_gives_patch_grid_cams(tiles, tmp_path):
    from segmix.pseudo import CamConfig, generate_pseudo_masks
    from segmix.train import train_classifier

    cfg = load_config(
        Stage1Config,
        None,
        [
            "model.backbone=vit_small_patch16_224",
            "model.trainable_blocks=1",
            "train.backbone_lr=0.0001",
            "train.image_size=64",
            "train.batch_size=8",
            "train.epochs=1",
            "num_workers=0",
            "ladder.patch_min=16",
        ],
    )
    torch.manual_seed(cfg.seed)  # what train_classifier does before it builds the model
    before = CamClassifier("vit_small_patch16_224", 4, output_stride=16).state_dict()
    path = train_classifier(cfg, tiles, tmp_path / "s1", progress=False)
    model, _, _ = load_classifier(path)
    assert model.cams(torch.rand(1, 3, 64, 64)).shape == (1, 4, 4, 4)
    after = model.state_dict()
    block = "encoder.model.blocks.{}.attn.qkv.weight"
    assert torch.equal(after[block.format(0)], before[block.format(0)])  # frozen: as initialised
    assert not torch.equal(after[block.format(11)], before[block.format(11)])  # the last block trained
    assert not torch.equal(after["head.weight"], before["head.weight"])
    scores = generate_pseudo_masks(path, tiles, tmp_path / "cams", CamConfig(scales=[1.0, 1.5]))
    assert scores is not None and 0 <= scores.miou <= 1


@pytest.mark.slow
def test_stage2_with_a_vit_encoder_picks_dpt_and_trains(tiles, tmp_path):
    from segmix.train import train_segmenter

    cfg = Stage2Config(
        model={"encoder": "tu-vit_small_patch16_224"},
        train={"image_size": 64, "batch_size": 4, "epochs": 1},
        num_workers=0,
    )
    path = train_segmenter(cfg, tiles, tiles / "train_gt", tmp_path / "s2", progress=False)
    trained = load_segmenter(path)
    model, cfg2 = trained.network, trained.config
    assert type(model).__name__ == "DPT"
    masks = segment(model, [torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8).numpy()] * 2, cfg2, "cpu", 5)
    assert masks[0].shape == (64, 64)
    big = segment(model, [torch.randint(0, 255, (100, 90, 3), dtype=torch.uint8).numpy()], cfg2, "cpu", 5)
    assert big[0].shape == (100, 90)  # sliding window, unchanged


def test_vit_encoders_refuse_cnn_decoders_and_odd_token_grids():
    with pytest.raises(ConfigError, match="use arch DPT"):
        load_config(Stage2Config, None, ["model.encoder=tu-vit_small_patch16_224", "model.arch=DeepLabV3Plus"])
    with pytest.raises(ConfigError, match="use arch DPT"):
        load_config(Stage2Config, None, ["model.encoder=uni", "model.arch=Unet"])
    assert type(create_segmenter("auto", "resnet18", 3)).__name__ == "DeepLabV3Plus"
    from segmix.models.segmenter import check_window

    dpt = create_segmenter("auto", "tu-vit_small_patch16_224", 3)
    check_window(dpt, 64)
    with pytest.raises(ConfigError, match="even number: use 96 or 128"):
        check_window(dpt, 112)


@pytest.mark.parametrize("name", sorted(FOUNDATION_MODELS))
def test_each_foundation_model_has_a_valid_gpu_preset(name):
    from pathlib import Path

    from segmix.pipeline import RunConfig

    path = Path(__file__).resolve().parents[1] / "src" / "segmix" / "configs" / f"{name}.yaml"
    cfg = load_config(RunConfig, path)
    assert cfg.stage1.model.backbone == name and cfg.stage2.model.encoder == name
    assert cfg.stage1.model.trainable_blocks == 4 and cfg.stage2.model.arch == "auto"
