"""The random-level control as a plug-in: every training batch mixed at a level drawn uniformly from
the whole ladder, no feedback. It answers "does the order of the levels matter, or only that the
model sees all of them?", a question for benchmarks only, so it lives here and registers itself
through segmix's registry (as a user's own rule would), not in the product.

Importing this module registers the rule ``random-level`` and the method ``shuffle-random-level``;
``feedback.py`` imports it and starts ``segmix`` through :data:`SEGMIX` so that its runs know it.
"""

from __future__ import annotations

import torch

from segmix.shuffle import Curriculum, HistoryRow, register_curriculum

# ``python -c SEGMIX ARGS...``: the segmix command with the benchmarks' plug-ins registered first.
SEGMIX = "import lookahead, random_level; from segmix.cli import main; main()"


@register_curriculum(
    "random-level",
    signal="train_loss",
    description="every batch at a level drawn uniformly from the whole ladder (a control without feedback)",
    methods={"shuffle-random-level": "the shuffle, each batch at a level drawn uniformly from the ladder"},
)
class RandomLevelCurriculum(Curriculum):
    """Records the finest level each epoch; before each batch sets the mixer to a drawn one.

    The draw is that of the finest fixed level with ``mixing.replay`` 5/6 (the setting this control
    was first measured with): two numbers per batch; with the first below ``(n - 1) / n`` an easier
    level from the second, else the finest. So its runs reproduce those numbers."""

    name = "random-level"

    def __init__(self, mixer, levels) -> None:
        super().__init__(mixer, levels)
        self.level = len(self.levels) - 1
        self._apply()

    def before_batch(self, generator: torch.Generator) -> None:
        n = len(self.levels)
        u = torch.rand(2, generator=generator).tolist()
        drawn = self.levels[-1] if u[0] >= (n - 1) / n else self.levels[min(int(u[1] * (n - 1)), n - 2)]
        self.mixer.patch_size, self.mixer.ratio = drawn.patch_size, drawn.ratio

    def step(self, signal: float) -> HistoryRow:
        return self._record(signal, "hold")
