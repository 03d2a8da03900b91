"""Coordinate grids in [-1, 1] (row, col), row-major, shared by the attention variants and the
decoders."""

from __future__ import annotations

import torch


def grid_from_axes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Row and column coordinates [h], [w] -> [h * w, 2] (row, col), row-major."""
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def coordinate_grid(size: tuple[int, int]) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1] of an (h, w) grid, row-major: [h * w, 2] (row, col)."""
    return grid_from_axes(torch.linspace(-1.0, 1.0, size[0]), torch.linspace(-1.0, 1.0, size[1]))


def pixel_coordinates(centres: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel positions (0 = the first pixel's centre, may be fractional) -> the [-1, 1]
    coordinates of `coordinate_grid(size)` at full resolution (pixel j at -1 + 2j / (size - 1))."""
    return centres * (2.0 / max(size - 1, 1)) - 1.0


def relative_grid(
    grid: torch.Tensor, positions: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """Grid coordinates [N, 2] in each slot's frame, (grid - S_p) / S_s, for positions and scales
    [B, K, 2]: [B, K, N, 2]."""
    return (grid[None, None] - positions[:, :, None]) / scales[:, :, None]
