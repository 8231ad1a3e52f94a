"""The curricula's ladder: levels from easy (coarse patches, few swaps) to hard (fine, many)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Level", "build_levels", "patch_ladder"]


@dataclass(frozen=True)
class Level:
    """One rung of the ladder: grid patch edge (pixels) and share of positions swapped."""

    patch_size: int
    ratio: float


def patch_ladder(tile_size: int, min_patch: int = 8, max_levels: int | None = None, multiple_of: int = 1) -> list[int]:
    """Patch sizes from coarse to fine: divisors of ``tile_size`` in [min_patch, tile_size // 2]
    that are multiples of ``multiple_of`` (a ViT's token size: shuffled patches then align with
    tokens, and each CAM cell has one source).

    With ``max_levels`` the ladder is thinned evenly, keeping the coarsest and finest sizes.

    Examples:
        >>> patch_ladder(112, min_patch=14)
        [56, 28, 16, 14]
        >>> patch_ladder(112, min_patch=14, max_levels=3)
        [56, 16, 14]
    """
    sizes = [d for d in range(tile_size // 2, min_patch - 1, -1) if tile_size % d == 0 and d % multiple_of == 0]
    if not sizes:
        raise ValueError(
            f"no divisor of {tile_size} that is a multiple of {multiple_of} lies in [{min_patch}, {tile_size // 2}]"
        )
    if max_levels is not None and len(sizes) > max_levels >= 2:
        picks = [round(i * (len(sizes) - 1) / (max_levels - 1)) for i in range(max_levels)]
        sizes = [sizes[i] for i in sorted(set(picks))]
    return sizes


def build_levels(patch_sizes: list[int], ratio_floor: float, ratio_ceiling: float, ratio_steps: int = 2) -> list[Level]:
    """Ladder of levels: for each patch size (coarse to fine), ratios from floor to ceiling.

    Examples:
        >>> [(lv.patch_size, lv.ratio) for lv in build_levels([56, 28], 0.25, 0.5)]
        [(56, 0.25), (56, 0.5), (28, 0.25), (28, 0.5)]
    """
    if not 0.0 <= ratio_floor <= ratio_ceiling <= 1.0:
        raise ValueError(f"need 0 <= ratio_floor <= ratio_ceiling <= 1, got {ratio_floor}, {ratio_ceiling}")
    steps = max(1, ratio_steps)
    ratios = [ratio_floor + (ratio_ceiling - ratio_floor) * i / max(steps - 1, 1) for i in range(steps)]
    return [Level(ps, round(r, 6)) for ps in patch_sizes for r in ratios]
