"""Headless matplotlib for the reports: import pyplot without a display, save or encode a
figure and free it.

Every experiment and evaluation report draws its figures off-screen (the Agg backend: no
display on servers and CI) and closes each figure once written, so that a long study does
not hold every figure it drew in memory.
"""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(*args: Any, **kwargs: Any) -> Any:
    """``pyplot().subplots``: a new off-screen figure and its axes."""
    return pyplot().subplots(*args, **kwargs)


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` (format from the extension) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def png_bytes(fig: Any, dpi: int = 120) -> bytes:
    """Lay out ``fig`` and return it as PNG bytes (for data URIs and stored reports); closes it."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return buffer.getvalue()
