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


def finish(fig, out: str | Path | None, default: str | Path | None = None) -> Path:
    """Lay ``fig`` out (``tight_layout`` unless it has a layout engine already, e.g. ``layout="constrained"``), save it
    atomically to ``out`` (``default`` when ``out`` is None) and close it; its path."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = save_atomic(fig, out if out is not None else default)
    pyplot().close(fig)
    return path
