"""Table 1 (midpoint test-loss barrier) from curve rows, as table1.{csv,md,tex}, and the paper's
ResNet row beside it, labelled as the paper's (another architecture)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.families import LABELS, TEX_LABELS

from ..mli.metrics import alpha_grid, ttest
from .pairs import ALIGNED, VARIANTS

VARIANT_LABELS = {**LABELS, ALIGNED: "Standard + weight matching"}
TEX_VARIANT_LABELS = {**TEX_LABELS, ALIGNED: "Standard + weight matching"}
TABLE_COLUMNS = ("variant", "n", "n_diverged", "barrier_mean", "barrier_std", "p_barrier", "endpoint_loss_mean",
                 "midpoint_loss_mean", "align_s_mean")
# THE PAPER'S numbers (Lim et al. 2024, Table 1, row "ResNet (CIFAR-10)"), not ours: ResNet-20s with
# LayerNorm at width 64, 100 epochs, >= 5 pairs each; another network than this zoo's ResNet-8.
PAPER_RESNET_ROW = {"standard": (3.287, 0.32), ALIGNED: (2.041, 0.21), "sigma_asym": (2.521, 0.46),
                    "w_asym": (0.934, 0.72)}
PAPER_ABOUT = ("The paper's Table 1 row \"ResNet (CIFAR-10)\" (Lim et al. 2024; mean ± std over at least 5 pairs): "
               "ResNet-20s with LayerNorm at width 64 trained 100 epochs at their own recipe, not this zoo's "
               "ResNet-8s, so the numbers are not comparable in size; shown for the order of the rows only. "
               "Not a reproduction.")
PVALUES_ABOUT = ("p: two-sided Student t-test (equal variances, scipy.stats.ttest_ind) of the variant's barriers "
                 "against standard's; — where a side has fewer than two pairs.")


def barriers(alphas, losses) -> np.ndarray:
    """alphas [A] evenly spaced 0..1 with A odd, losses [N, A] -> [N] midpoint barriers
    L(1/2 theta_a + 1/2 theta_b) - 1/2 (L(theta_a) + L(theta_b)) (paper Section 5.1)."""
    alphas, losses = np.asarray(alphas, np.float64), np.asarray(losses, np.float64)
    if losses.ndim != 2 or losses.shape[1] != len(alphas) or len(alphas) % 2 == 0 or len(alphas) < 3:
        raise ValueError(f"alphas {alphas.shape}, losses {losses.shape}: need alphas [A odd >= 3], losses [N, A]")
    if not np.allclose(alphas, alpha_grid(len(alphas))):
        raise ValueError(f"alphas={alphas.tolist()}: must be evenly spaced from 0 to 1")
    mid = len(alphas) // 2
    return losses[:, mid] - 0.5 * (losses[:, 0] + losses[:, -1])


def pair_barriers(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per ok pair with a finite curve: variant, pair, barrier, endpoint and midpoint loss, align_s."""
    ok = curves[[s == "ok" and np.isfinite(c).all() for s, c in zip(curves.status, curves.losses)]]
    if ok.empty:
        return pd.DataFrame(columns=["variant", "pair", "barrier", "endpoint_loss", "midpoint_loss", "align_s"])
    alphas, losses = np.stack(ok.alphas.to_numpy()), np.stack(ok.losses.to_numpy())
    if not (alphas == alphas[0]).all():
        raise ValueError("curves: alphas differ between pairs; one out folder holds one alpha grid")
    mid = losses.shape[1] // 2
    return pd.DataFrame({"variant": ok.variant.to_numpy(), "pair": ok.pair.to_numpy(),
                         "barrier": barriers(alphas[0], losses), "endpoint_loss": 0.5 * (losses[:, 0] + losses[:, -1]),
                         "midpoint_loss": losses[:, mid], "align_s": ok.align_s.to_numpy()})


def table1(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per variant present, in VARIANTS order, columns TABLE_COLUMNS."""
    per = pair_barriers(curves)
    base = per[per.variant == "standard"].barrier
    rows = []
    for v in (v for v in VARIANTS if v in set(curves.variant)):
        g = per[per.variant == v]
        rows.append({"variant": v, "n": len(g), "n_diverged": int((curves[curves.variant == v].status != "ok").sum()),
                     "barrier_mean": float(g.barrier.mean()), "barrier_std": float(g.barrier.std(ddof=1)),
                     "p_barrier": math.nan if v == "standard" else ttest(g.barrier, base),
                     "endpoint_loss_mean": float(g.endpoint_loss.mean()),
                     "midpoint_loss_mean": float(g.midpoint_loss.mean()), "align_s_mean": float(g.align_s.mean())})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _pm(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _num(x: float, fmt: str = ".3f") -> str:
    return "—" if math.isnan(x) else format(x, fmt)


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| pairs of | n pairs | diverged | midpoint barrier ↓ | p vs standard | ½(L(θa)+L(θb)) | L(½θa+½θb) "
             "| alignment s/pair |", "|" + "---|" * 8]
    for r in table.itertuples():
        lines.append(f"| {VARIANT_LABELS[r.variant]} | {r.n} | {r.n_diverged} | {_pm(r.barrier_mean, r.barrier_std)} "
                     f"| {_num(r.p_barrier, '.2g')} | {_num(r.endpoint_loss_mean)} | {_num(r.midpoint_loss_mean)} "
                     f"| {_num(r.align_s_mean, '.3f')} |")
    return "\n".join(lines)


PAPER_COLUMNS = {"standard": "Standard", ALIGNED: "Git-ReBasin", "sigma_asym": "σ-Asym", "w_asym": "W-Asym"}


def paper_markdown() -> str:
    head = "| | " + " | ".join(PAPER_COLUMNS[v] for v in VARIANTS) + " |"
    row = "| ResNet-20, LayerNorm, width 64 (the paper's, not ours) | " + " | ".join(_pm(*PAPER_RESNET_ROW[v]) for v in VARIANTS) + " |"
    return "\n".join([head, "|" + "---|" * (len(VARIANTS) + 1), row])


def latex_table(table: pd.DataFrame) -> str:
    lines = [r"\begin{tabular}{lrcc}", r"\toprule", r"Pairs of & $n$ & midpoint barrier $\downarrow$ & $p$ \\",
             r"\midrule"]
    for r in table.itertuples():
        pm = "--" if math.isnan(r.barrier_mean) else f"${r.barrier_mean:.3f} \\pm {r.barrier_std:.3f}$"
        p = "--" if math.isnan(r.p_barrier) else f"{r.p_barrier:.2g}"
        lines.append(f"{TEX_VARIANT_LABELS[r.variant]} & {r.n} & {pm} & {p} \\\\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", ""])


def read_table1(out: Path) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "table1.csv")


def sections(table: pd.DataFrame, about: str) -> list[str]:
    """Markdown lines: what was measured, ours, the p-values' meaning, the paper's row (labelled)."""
    return [about, "", markdown_table(table), "", PVALUES_ABOUT, "", PAPER_ABOUT, "", paper_markdown()]


def write_tables(table: pd.DataFrame, out: Path, about: str) -> None:
    """table1.csv (full precision), table1.md (ours and the paper's row), table1.tex (ours)."""
    out = Path(out)
    table.to_csv(out / "table1.csv", index=False)
    (out / "table1.md").write_text("\n".join(["# Table 1: linear mode connectivity, midpoint test-loss barrier", "",
                                              *sections(table, about), ""]))
    (out / "table1.tex").write_text(latex_table(table))
