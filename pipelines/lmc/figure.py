"""Figure 3 of the paper, for this zoo: test loss along the line between two trained replicates,
mean ± std over pairs per variant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zoo.data import data_label

from .pairs import VARIANTS
from .table import VARIANT_LABELS


def plot_figure3(curves: pd.DataFrame, path: Path, data: dict | None = None) -> Path:
    """One line per variant: the mean curve over its ok pairs, a band of ± one std; `data` (the
    zoo's data identity) is named under the title."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for v in (v for v in VARIANTS if v in set(curves.variant)):
        c = curves[(curves.variant == v) & (curves.status == "ok")]
        if c.empty:
            continue
        alphas, losses = np.stack(c.alphas.to_numpy())[0], np.stack(c.losses.to_numpy())
        mean, std = losses.mean(0), losses.std(0)
        ax.plot(alphas, mean, label=f"{VARIANT_LABELS[v]} (n={len(c)} pairs)")
        ax.fill_between(alphas, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="α: θ = (1 - α) θa + α θb", ylabel="test loss (plain cross-entropy)", xlim=(0, 1))
    ax.set_title(f"Linear mode connectivity between replicates (mean ± std over pairs)\n{data_label(data)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)
    return Path(path)
