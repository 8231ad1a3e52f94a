"""Stage 1's epoch-end work: the curriculum's step and trace, the patch pool's rebuild."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader

from segmix.config import Stage1Config
from segmix.data.dataset import TileDataset
from segmix.data.io import csv_text, write_text
from segmix.data.spec import DatasetSpec
from segmix.data.stain import StainNormalizer
from segmix.shuffle import write_history_csv
from segmix.train.data import MaskedTiles
from segmix.train.pool import PoolStats, write_pool_csv
from segmix.train.probe import PROBE_CSV


class CurriculumCallback(L.Callback):
    """Steps the curriculum at each epoch end with the feedback signal; writes its trace."""

    def __init__(self, csv_path: str | Path) -> None:
        self.csv_path = Path(csv_path)

    def on_train_epoch_end(self, trainer: L.Trainer, module) -> None:  # module: Stage1Module
        if module.curriculum is None:
            return
        row = module.curriculum.step(module.feedback_signal())
        module.log_dict(
            {
                "curriculum/level": float(row.level),
                "curriculum/patch_size": float(row.patch_size),
                "curriculum/ratio": float(row.ratio),
            }
        )
        metrics = trainer.callback_metrics
        if "val_cell_count" in metrics:
            reading = {name: float(metrics[f"val_cell_{name}"]) for name in ("accuracy", "count", "se")}
            module.probe_history.append({"step": row.step, **reading})
        if trainer.is_global_zero:
            write_history_csv(module.curriculum.history, self.csv_path)
            if module.probe_history:
                write_text(self.csv_path.with_name(PROBE_CSV), csv_text(module.probe_history))
        if trainer.world_size > 1:  # every rank's own trace, to audit that all decide alike
            rank_csv = self.csv_path.parent / "ranks" / f"curriculum.rank{trainer.global_rank}.csv"
            write_history_csv(module.curriculum.history, rank_csv)


class PoolCallback(L.Callback):
    """Rebuilds the patch pool after the curriculum's step (so at the next epoch's patch size);
    writes its trace (``pool.csv``: size and, with pixel truth, precision per epoch).

    ``make_loader(rank, world_size)`` gives this process's :class:`MaskedTiles` loader.
    """

    def __init__(self, make_loader: Callable[[int, int], DataLoader], csv_path: str | Path) -> None:
        self.make_loader, self.csv_path = make_loader, Path(csv_path)
        self.loader: DataLoader | None = None

    def setup(self, trainer: L.Trainer, module, stage: str) -> None:  # module: Stage1Module
        if module.pool is not None:
            self.loader = self.make_loader(trainer.global_rank, trainer.world_size)

    def on_train_epoch_end(self, trainer: L.Trainer, module) -> None:  # module: Stage1Module
        if module.pool is None:
            return
        share, patch_size = module.pool_share(), module.mixer.patch_size
        counts = (0, 0, 0, 0, 0)
        if share > 0:
            was_training = module.training
            module.eval()

            def forward(images: Tensor) -> Tensor:
                return module.model(module.normalize(images.to(module.device)))[1]

            def reduce_sum(t: Tensor) -> Tensor:
                return trainer.strategy.reduce(t.to(module.device), reduce_op="sum").cpu()

            size = module.cfg.train.image_size
            counts = module.pool.update(forward, self.loader, size, patch_size, share, reduce_sum)
            module.train(was_training)
        else:
            module.pool.clear()
        row = PoolStats(trainer.current_epoch, patch_size, share, *counts)
        module.pool_history.append(row)
        module.log_dict({"pool/admitted": float(row.admitted), "pool/precision": row.precision or 0.0})
        if trainer.is_global_zero:
            write_pool_csv(module.pool_history, self.csv_path)


def pool_loader(
    cfg: Stage1Config,
    data_root: str | Path,
    spec: DatasetSpec,
    stain: StainNormalizer | None,
    indices: list[int],
    workers: int,
) -> Callable[[int, int], DataLoader]:
    """Loader factory of the pool's pass over training tiles ``indices``, read with their masks;
    called only when there is a pool, so runs without one do not list the tiles twice."""

    def make(rank: int, world_size: int) -> DataLoader:
        tiles = TileDataset(data_root, "train", spec, stain=stain)
        dataset = MaskedTiles(tiles, cfg.train.image_size, indices[rank::world_size])
        return DataLoader(dataset, batch_size=cfg.train.batch_size * 2, num_workers=workers)

    return make
