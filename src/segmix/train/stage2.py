"""Stage 2: a segmentation network trained on pseudo masks (or on truth, the upper bound).

Cross-entropy that skips the ignore index (255, uncertain pseudo-mask pixels), single-label
tiles' pseudo masks made exact (:func:`exact_single_label`), joint flips of image and mask, stain
jitter of the image. Validation mIoU against real masks every epoch; the best epoch by val mIoU
over the whole run (resumes included) is kept beside the last one and exported (``best.json``
names it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from segmix.config import Stage2Config, save_config
from segmix.config.foundation import FOUNDATION_MODELS
from segmix.data.dataset import TileDataset, collate_list, require_masks
from segmix.data.io import IGNORE_INDEX, read_mask, write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.data.stain import fit_stain_normalizer
from segmix.errors import DatasetError
from segmix.eval.metrics import ConfusionMatrix
from segmix.models import (
    SEGMENTER_FILE,
    create_segmenter,
    save_segmenter,
    segment,
    segmenter_input,
)
from segmix.models.segmenter import check_window
from segmix.train.augment import dihedral_pair, hed_jitter
from segmix.train.data import EpochShuffle, decode_undrawn, fit_square
from segmix.train.runtime import (
    BestCheckpoint,
    EpochCheckpoint,
    adamw_cosine,
    build_trainer,
    check_finite,
    claim_run_folder,
    fit_or_resume,
    run_placement,
    step_generator,
)

log = logging.getLogger(__name__)


class MaskFolderTiles(Dataset):
    """Train tiles with the masks of a folder (named ``<image stem>.png``), resized to ``size``:
    ``(image uint8 (3, S, S), mask long (S, S), label float (K,))``.

    ``exact``: a tile with a single label gets that class on every pixel but background and
    ignored ones (:func:`exact_single_label`), for pseudo masks; truth is read as it is.
    """

    def __init__(self, tiles: TileDataset, mask_dir: str | Path, size: int, exact: bool = False) -> None:
        self.tiles, self.size, self.exact = tiles, size, exact
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DatasetError(self.mask_dir, "mask folder does not exist")
        self.masks = []
        for s in tiles.samples:
            path = self.mask_dir / f"{Path(s.name).stem}.png"
            if not path.is_file():
                raise DatasetError(path, f"no mask for training image {s.name}")
            self.masks.append(path)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        item = self.tiles[index]
        image = item["image"]
        spec = self.tiles.spec
        mask = read_mask(self.masks[index], spec.num_indices, spec.palette, image.shape[:2])
        image, mask = fit_square(image, self.size), fit_square(mask, self.size, Image.NEAREST)
        label = torch.from_numpy(item["label"].astype(np.float32))
        mask = torch.from_numpy(np.array(mask)).long()
        if self.exact:
            mask = exact_single_label(mask[None], label[None], spec.background_index)[0]
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), mask, label


def exact_single_label(masks: Tensor, labels: Tensor, background_index: int | None) -> Tensor:
    """Masks whose tiles carry one label: that class on every pixel but background and ignored.

    Args:
        masks: long (B, H, W) pseudo masks.
        labels: float (B, K) multi-hot image labels.
        background_index: the glass index the pseudo masks wrote (kept), or None.

    Returns:
        long (B, H, W); tiles with several labels unchanged.

    Examples:
        >>> import torch
        >>> masks = torch.tensor([[[0, 1], [255, 2]], [[0, 1], [1, 1]]])
        >>> exact_single_label(masks, torch.tensor([[0.0, 1.0], [1.0, 1.0]]), background_index=2).tolist()
        [[[1, 1], [1, 2]], [[0, 1], [1, 1]]]
    """
    single = (labels > 0.5).sum(dim=1) == 1
    keep = masks == background_index if background_index is not None else torch.zeros_like(masks, dtype=torch.bool)
    exact = labels.argmax(dim=1)[:, None, None].expand_as(masks)
    return torch.where(single[:, None, None] & ~keep, exact, masks)


class Stage2Module(L.LightningModule):
    def __init__(self, config: dict, spec: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Stage2Config.model_validate(config)
        self.spec = DatasetSpec.model_validate(spec)
        self.num_out = self.spec.num_indices
        m = self.cfg.model
        if m.encoder in FOUNDATION_MODELS and not m.weights:
            log.warning(
                "stage 2 encoder %s starts from random weights: set model.weights to its weights file", m.encoder
            )
        self.model = create_segmenter(m.arch, m.encoder, self.num_out, m.encoder_weights, m.weights)
        check_window(self.model, self.cfg.train.image_size)
        self._cm: ConfusionMatrix | None = None

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, masks, _ = batch
        g = step_generator(self.cfg.seed, self.global_step, self.global_rank)
        x = images.float() / 255
        if self.cfg.augment.dihedral:
            x, masks = dihedral_pair(x, masks, g)
        x = hed_jitter(x, self.cfg.augment.hed_jitter, g)
        inputs = segmenter_input(x).contiguous(memory_format=torch.channels_last)
        logits = self.model(inputs).float()
        pixel = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="none")
        weights = (masks != IGNORE_INDEX).float()
        loss = (pixel * weights).sum() / weights.sum().clamp(min=1e-6)
        check_finite(loss, self.global_step)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._cm = ConfusionMatrix(self.num_out, self.spec.index_names, self.spec.exclude_index)

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        images = [it["image"] for it in batch]
        for pred, item in zip(
            segment(self.model, images, self.cfg, self.device, self.num_out, self.cfg.precision), batch
        ):
            self._cm.update(pred, item["mask"])

    def on_validation_epoch_end(self) -> None:
        self._cm.sum_across(lambda counts: self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum"))
        scores = self._cm.compute()
        self.log("val_miou", float(np.nan_to_num(scores.miou)), prog_bar=True)
        self.log("val_fwiou", float(np.nan_to_num(scores.fwiou)))

    def configure_optimizers(self) -> dict:
        return adamw_cosine(self.model.parameters(), self.cfg.train)


def train_segmenter(
    cfg: Stage2Config,
    data_root: str | Path,
    mask_dir: str | Path,
    out_dir: str | Path,
    spec: DatasetSpec | None = None,
    progress: bool = True,
    extra_callbacks: list | None = None,
    claim: bool = True,
    truth: bool = False,
) -> Path:
    """Train (or resume) stage 2 on the masks in ``mask_dir``; returns ``segmenter.pt`` (best epoch).

    ``mask_dir`` holds ``<train image stem>.png`` masks: pseudo masks from ``segmix cams``, or
    the dataset's ``train_gt`` for the fully supervised upper bound (``truth``: read as they are,
    single-label tiles not made exact).
    """
    out = Path(out_dir)
    if claim:  # as in train_classifier: segmix run decides resumption by its own hashes
        claim_run_folder(out, cfg, SEGMENTER_FILE, dataset=data_root, masks=mask_dir)
    spec = spec or resolve_spec(data_root)
    train_tiles = TileDataset(data_root, "train", spec, with_masks=False)
    stain = fit_stain_normalizer(cfg.stain.method, cfg.stain.reference, train_tiles, cfg.stain.fit_tiles)
    train_tiles.stain = stain
    train_set = MaskFolderTiles(train_tiles, mask_dir, cfg.train.image_size, exact=not truth)
    batch = cfg.train.batch_size
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    precision, workers = run_placement(cfg)
    loader_args = {"num_workers": workers, "persistent_workers": workers > 0}
    sampler, drop_last = EpochShuffle(len(train_set), cfg.seed), len(train_set) >= 2 * batch
    decode_undrawn(train_set, sampler, len(sampler) // batch * batch if drop_last else len(sampler))
    train_loader = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=drop_last, **loader_args)
    val_loader = None
    if spec.splits.val and (Path(data_root) / spec.splits.val).is_dir():
        val_tiles = TileDataset(data_root, "val", spec, stain=stain)
        require_masks(val_tiles, "stage 2 scores every epoch on them to keep the best one")
        val_loader = DataLoader(val_tiles, batch_size=batch, collate_fn=collate_list, **loader_args)
    module = Stage2Module(cfg.model_dump(mode="json"), spec.model_dump(mode="json"))
    ckpt_dir = out / "checkpoints"
    # In this order: the best epoch's weights are written after the last.ckpt that names them.
    callbacks = [EpochCheckpoint(ckpt_dir / "last.ckpt")]
    best = BestCheckpoint(ckpt_dir / "best.ckpt") if val_loader is not None else None
    callbacks += [best] if best else []
    trainer = build_trainer(
        cfg, precision, cfg.train.epochs, out, callbacks + list(extra_callbacks or []), progress, num_sanity_val_steps=0
    )
    if trainer.is_global_zero:
        masks = str(Path(mask_dir).resolve())
        save_config(cfg, out / "config.yaml", dataset=str(Path(data_root).resolve()), masks=masks, precision=precision)
    fit_or_resume(trainer, module, train_loader, val_loader, ckpt_dir)
    target = out / SEGMENTER_FILE
    if trainer.is_global_zero:
        state = module.model.state_dict()
        if best is not None and best.epoch is not None:  # None: resumed from a checkpoint of before BestCheckpoint
            best.sync(trainer, module)  # a resume with nothing left to train starts no epoch
            state = best.weights()
            write_text(out / "best.json", json.dumps({"epoch": best.epoch, "val_miou": best.score}))
        save_segmenter(state, cfg, spec, target, stain)
    return target
