"""Checks of the report's PNG plots: a file that decodes as a PNG, at the size plots.py draws
(7 x 4.2 in at 110 dpi = 770 x 462 px), with the colours of the series drawn in it."""
from __future__ import annotations

from pathlib import Path

SIZE = (462, 770)  # rows x columns
COLOURS = {"C0": (31, 119, 180), "C1": (255, 127, 14), "C2": (44, 160, 44)}  # matplotlib's first three


def read_png(path: Path):
    """The image as uint8 RGB rows; fails unless the file is a whole PNG of the plots' size."""
    import matplotlib.image
    import numpy as np

    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = matplotlib.image.imread(path)  # decodes every row: a truncated file raises
    assert image.shape[:2] == SIZE, (path, image.shape)
    return (np.asarray(image)[..., :3] * 255).round().astype("uint8")


def pixels_of(image, colour: str) -> int:
    """How many pixels have (within 2 levels) the colour of series `colour` (C0, C1, ...)."""
    import numpy as np

    return int((np.abs(image.astype(int) - COLOURS[colour]).max(axis=-1) <= 2).sum())
