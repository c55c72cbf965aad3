"""Optional PR and F-threshold curves per dataset (needs matplotlib, an optional extra)."""
from __future__ import annotations

import importlib
import io
from pathlib import Path
from types import ModuleType

from eval.sod.aggregate import DatasetScores
from eval.sod.metrics import THRESHOLDS
from utils.cli import UserError
from utils.io import atomic_write_bytes

MISSING_MATPLOTLIB = ("--plot needs matplotlib, an optional extra: pip install matplotlib "
                      "(listed in requirements-extra.txt)")


class MissingDependencyError(UserError, ImportError):
    """An optional package a requested feature needs is not installed."""


def require_matplotlib() -> ModuleType:
    """Return ``matplotlib.pyplot`` with the Agg backend; an ImportError (a UserError) with an
    install hint if absent."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise MissingDependencyError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _save(figure, path: Path) -> None:
    """Render ``figure`` to PNG bytes and write them atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def save_curves(results: dict[str, DatasetScores], out_dir: Path) -> list[Path]:
    """Write ``<Dataset>_PR.png`` and ``<Dataset>_F_threshold.png`` per dataset; return the paths.

    The curves are the dataset curves of main_VSOD.m's aggregation (mean over sequences of the
    per-sequence mean curves); precision/recall follow Fmeasure_calu.m (``sal >= t``).
    """
    plt = require_matplotlib()
    written = []
    for name, scores in results.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(scores.recall, scores.precision)
        ax.set(xlabel="Recall", ylabel="Precision", title=f"{name}: PR curve", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        written.append(out_dir / f"{name}_PR.png")
        _save(fig, written[-1])
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(THRESHOLDS, scores.F, label=f"F (max {scores.maxF:.3f})")
        ax.plot(THRESHOLDS, scores.E, label=f"E (max {scores.maxE:.3f})")
        ax.set(xlabel="Threshold", ylabel="Score", title=f"{name}: F / E vs threshold", xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(out_dir / f"{name}_F_threshold.png")
        _save(fig, written[-1])
        plt.close(fig)
    return written
