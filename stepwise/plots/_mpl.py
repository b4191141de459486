"""The only place matplotlib is configured: a non-interactive backend and atomic saving."""

from __future__ import annotations

from pathlib import Path

from stepwise.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed, no windows opened)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_atomic(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure atomically (see :func:`stepwise.io.atomic_path`)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png", metadata={"Software": None})
    return Path(path)
