"""Figure 5: L(alpha) curves, one panel per family."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zoo.data import data_label
from zoo.families import LABELS

from .metrics import finite_curves, ordered_families


def plot_figure5(curves: pd.DataFrame, path: Path, *, top: int = 20, data: dict | None = None) -> Path:
    """One panel per family: L(alpha) of its `top` members with the lowest recorded train loss;
    `data` (the zoo's data identity) is named under the title."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    ok = curves[finite_curves(curves)]
    fams = ordered_families(ok.family)
    fig = Figure(figsize=(4.8 * max(len(fams), 1), 4.0), layout="constrained")
    fig.suptitle(f"Train loss from initialisation (α = 0) to trained weights (α = 1)\nper family, the {top} members "
                 f"with the lowest final train loss; darker = lower\n{data_label(data)}", fontsize=10)
    for ax, fam in zip(fig.subplots(1, max(len(fams), 1), squeeze=False)[0], fams):
        g = ok[ok.family == fam].nsmallest(top, "train_loss_recorded")
        for color, (alphas, losses) in zip(colormaps["viridis"](np.linspace(0, 0.9, len(g))), zip(g.alphas, g.losses)):
            ax.plot(alphas, losses, color=color, lw=1.0, alpha=0.85)
        ax.set_title(f"{LABELS[fam]} ({len(g)} of {int((ok.family == fam).sum())} members)", fontsize=11)
        ax.set(xlabel="α", ylabel="train loss L(α)", xlim=(0, 1))
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=150)
    return Path(path)
