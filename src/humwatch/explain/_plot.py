"""matplotlib without a display (Agg) and saving figures whole.

Every figure humwatch saves goes through :func:`figure_png` (or :func:`save_figure`), which writes it
at :data:`FIGURE_DPI` at least, with the resolution in the PNG's metadata; :func:`pyplot` sets the
title sizes (:data:`TITLE_SIZE`, :data:`SUPTITLE_SIZE`) for every figure drawn after it.
"""

from __future__ import annotations

import io
from pathlib import Path

FIGURE_DPI = 150
"""The least resolution (dots per inch) of every saved figure."""
TITLE_SIZE = 11
"""Font size (points) of panel titles."""
SUPTITLE_SIZE = 13
"""Font size (points) of a figure's title."""
STYLE = {
    "axes.titlesize": TITLE_SIZE,
    "figure.titlesize": SUPTITLE_SIZE,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), with humwatch's font sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(STYLE)
    return plt


def save_figure(fig, path: str | Path, dpi: int = FIGURE_DPI, palette: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` (whole or not at all) and close it (see :func:`figure_png`)."""
    from humwatch.io import atomic_path

    path = Path(path)
    data = figure_png(fig, dpi, palette)
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)
    return path


def figure_png(fig, dpi: int = FIGURE_DPI, palette: bool = True) -> bytes:
    """``fig`` as PNG bytes at ``dpi`` (never under :data:`FIGURE_DPI`); the figure is closed.

    ``palette``: store it with a 256-colour palette (no dithering), which looks the same for these
    colour-mapped pictures and makes noisy spectrograms about three times smaller.
    """
    plt = pyplot()
    dpi = max(int(dpi), FIGURE_DPI)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if palette:
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("RGB")
        img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True, dpi=(dpi, dpi))
        data = out.getvalue()
    return data
