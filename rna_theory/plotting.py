"""Saving figures the same way everywhere: tight layout, parent folders made, figure closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG to ``path`` (creating folders) and close it; returns the path.

    Closing matters in loops and long runs: pyplot keeps every open figure alive otherwise.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
