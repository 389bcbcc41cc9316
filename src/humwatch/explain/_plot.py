"""matplotlib without a display (Agg) and saving figures whole."""

from __future__ import annotations

import io
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100, palette: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` (whole or not at all) and close it (see :func:`figure_png`)."""
    from humwatch.io import atomic_path

    path = Path(path)
    data = figure_png(fig, dpi, palette)
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)
    return path


def figure_png(fig, dpi: int = 100, palette: bool = True) -> bytes:
    """``fig`` as PNG bytes; the figure is closed.

    ``palette``: store it with a 256-colour palette (no dithering), which looks the same for these
    colour-mapped pictures and makes noisy spectrograms about three times smaller.
    """
    plt = pyplot()
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
        img.save(out, format="PNG", optimize=True)
        data = out.getvalue()
    return data
