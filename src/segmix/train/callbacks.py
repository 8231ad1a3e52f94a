"""Stage 1's epoch-end work: the curriculum's step and its trace."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from segmix.data.io import write_text
from segmix.data.text import csv_text
from segmix.shuffle import write_history_csv
from segmix.train.probe import PROBE_CSV


class CurriculumCallback(L.Callback):
    """Steps the curriculum at each epoch end with the feedback signal; writes its trace."""

    def __init__(self, csv_path: str | Path) -> None:
        self.csv_path = Path(csv_path)

    def on_train_epoch_end(self, trainer: L.Trainer, module) -> None:  # module: Stage1Module
        if module.curriculum is None:
            return
        if module.curriculum.reads_ahead:
            row = module.curriculum.step(module.feedback_signal(), ahead=module.ahead)
        else:
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
            if module.curriculum.reads_ahead:  # the next level's reading (empty at the top)
                reading["ahead"] = module.ahead
            module.probe_history.append({"step": row.step, **reading})
        if trainer.is_global_zero:
            write_history_csv(module.curriculum.history, self.csv_path)
            if module.probe_history:
                write_text(self.csv_path.with_name(PROBE_CSV), csv_text(module.probe_history))
        if trainer.world_size > 1:  # every rank's own trace, to audit that all decide alike
            rank_csv = self.csv_path.parent / "ranks" / f"curriculum.rank{trainer.global_rank}.csv"
            write_history_csv(module.curriculum.history, rank_csv)
