"""A trained segmenter ready to use: what :func:`segmix.load_segmenter` returns.

Three lines from a model file or package to a tissue map, as ``segmix predict`` makes it for an
image (the model's stain normaliser, its test-time flips and sliding windows, glass as
background where the dataset says so):

>>> import segmix
>>> model = segmix.load_segmenter("my-model")        # doctest: +SKIP
>>> tissue = model.predict("tile.png")                # doctest: +SKIP

``tissue`` is a uint8 (H, W) map of indices into ``model.classes`` (and the background index,
``model.background_index``, where the dataset has one); ``model.palette`` colours them and
``model.probs(image)`` gives the probabilities behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segmix.config import Stage2Config
from segmix.data.io import read_image
from segmix.data.spec import DatasetSpec
from segmix.data.tissue import tissue_mask
from segmix.models.inference import in_model_stain, segment_probs
from segmix.runtime import pick_device


@dataclass
class Segmenter:
    """A stage-2 network with what feeds it and names its output.

    Attributes:
        network: the torch module (its ``stain`` normaliser attached, None without one).
        config: the stage config it was trained with (input size, inference settings, precision).
        spec: the dataset description (classes, palette, background, microns per pixel).
        device: where it computes.
    """

    network: nn.Module
    config: Stage2Config
    spec: DatasetSpec
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def classes(self) -> list[str]:
        """Tissue class names: index ``i`` of a map is ``classes[i]``."""
        return list(self.spec.classes)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour per map index (classes, then background)."""
        return list(self.spec.palette[: self.spec.num_indices])

    @property
    def background_index(self) -> int:
        return self.spec.background_index

    @property
    def mpp(self) -> float | None:
        """Microns per pixel of the training tiles (None: unknown); read slides at it."""
        return self.spec.mpp

    def to(self, device: str | torch.device) -> Segmenter:
        """The segmenter on ``device`` (``"cuda"``, ``"cpu"``...)."""
        self.device = pick_device(device)
        self.network = self.network.to(self.device)
        return self

    def probs(self, image: np.ndarray | str | Path) -> np.ndarray:
        """Probabilities of one image of any size.

        Args:
            image: uint8 (H, W, 3) RGB, or an image file's path.

        Returns:
            float32 (K, H, W), K = classes + background, summing to 1 over K.
        """
        return self._probs(_pixels(image)).float().cpu().numpy()

    def predict(self, image: np.ndarray | str | Path) -> np.ndarray:
        """The tissue map of one image: uint8 (H, W) class indices, glass as background where
        the dataset counts glass as background (as ``segmix predict`` writes it)."""
        pixels = _pixels(image)
        tissue = self._probs(pixels).argmax(0).to(torch.uint8).cpu().numpy()
        if self.spec.glass_is_background:
            tissue[~tissue_mask(pixels)] = self.spec.background_index
        return tissue

    def _probs(self, pixels: np.ndarray) -> torch.Tensor:
        stained = in_model_stain(self.network, pixels)
        return segment_probs(self.network, [stained], self.config, self.device, self.spec.num_indices)[0]


def _pixels(image: np.ndarray | str | Path) -> np.ndarray:
    """uint8 (H, W, 3) pixels of an image or an image file."""
    return read_image(image) if isinstance(image, (str, Path)) else np.asarray(image, np.uint8)
