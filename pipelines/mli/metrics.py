"""Per-curve MLI metrics (paper Section 5.4) and Table 4's per-family statistics and t-tests."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import zoo

# per-member metrics, in Table 4's order; "global" is the paper's chord, "global_line" the companion's line
METRICS = ("delta", "monotonic", "local", "global", "global_line")
TABLE_COLUMNS = (
    "family", "n", "n_diverged", "n_nonfinite", "delta_mean", "delta_std", "monotonic_pct",
    "local_mean", "local_std", "global_mean", "global_std", "global_line_mean", "global_line_std",
    "p_delta", "p_monotonic", "p_local", "p_global", "p_global_line",
)
MEAN_STD = ("delta", "local", "global", "global_line")  # metrics with a mean and std column


def alpha_grid(n: int) -> np.ndarray:
    """[n] evenly spaced alphas, exactly 0 and 1 at the ends."""
    return np.linspace(0.0, 1.0, n)


def _check_curves(alphas, losses) -> tuple[np.ndarray, np.ndarray]:
    alphas, losses = np.asarray(alphas, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or alphas.ndim != 1 or losses.shape[1] != len(alphas) or len(alphas) < 3:
        raise ValueError(f"alphas {alphas.shape}, losses {losses.shape}: need alphas [A >= 3], losses [N, A]")
    if not np.allclose(alphas, alpha_grid(len(alphas))):
        raise ValueError(f"alphas={alphas.tolist()}: must be evenly spaced from 0 to 1")
    if not np.isfinite(losses).all():
        raise ValueError("losses: must be finite (exclude diverged members first)")
    return alphas, losses


def mli_metrics(alphas, losses) -> dict[str, np.ndarray]:
    """alphas [A] evenly spaced 0..1, losses [N, A] -> METRICS, each [N].

    The definitions are the package docstring's; the centred second difference needs no 1/h^2
    factor since only its sign counts.
    """
    alphas, losses = _check_curves(alphas, losses)
    delta = np.diff(losses, axis=1).max(axis=1)
    second = losses[:, :-2] - 2 * losses[:, 1:-1] + losses[:, 2:]
    inner = alphas[1:-1]
    chord = (1 - inner) * losses[:, :1] + inner * losses[:, -1:]
    # the companion code's `results[0] + (results[1] - results[0]) * xs`: through (0, L_0) and (1, L_1)
    line = losses[:, :1] + (losses[:, 1:2] - losses[:, :1]) * inner
    return {
        "delta": delta,
        "monotonic": delta <= 0,
        "local": (second >= 0).mean(axis=1),
        "global": (losses[:, 1:-1] <= chord).mean(axis=1),
        "global_line": (losses[:, 1:-1] <= line).mean(axis=1),
    }


def finite_curves(curves: pd.DataFrame) -> np.ndarray:
    """[rows] bool: the curve rows that enter the statistics (ok members with finite losses)."""
    return np.array([s == "ok" and np.isfinite(c).all() for s, c in zip(curves.status, curves.losses)], dtype=bool)


def ordered_families(names) -> list[str]:
    """Families present, in zoo.FAMILIES order."""
    present = set(names)
    return [f for f in zoo.FAMILIES if f in present]


def member_metrics(curves: pd.DataFrame) -> pd.DataFrame:
    """Curve rows -> one row per member with a finite curve: member_id, family, index and METRICS."""
    ok = curves[finite_curves(curves)].reset_index(drop=True)
    base = ok[["member_id", "family", "index"]]
    if ok.empty:
        return base.assign(**{m: pd.Series(dtype=float) for m in METRICS})
    alphas = np.stack(ok.alphas.to_numpy())
    if not (alphas == alphas[0]).all():
        raise ValueError("curves: alphas differ between members; one out folder holds one alpha grid")
    return base.assign(**mli_metrics(alphas[0], np.stack(ok.losses.to_numpy())))


def ttest(a: pd.Series, b: pd.Series) -> float:
    """Two-sided Student t-test p-value; NaN when either side has fewer than two members."""
    from scipy import stats  # scipy's import is slow; the CLI imports this package to build its flags

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    with warnings.catch_warnings():  # two constant samples (e.g. all monotonic) are legitimate: p is NaN or 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a.astype(float), b.astype(float)).pvalue)


def _family_row(fam: str, curves: pd.DataFrame, per: pd.DataFrame) -> dict:
    c, g, base = curves[curves.family == fam], per[per.family == fam], per[per.family == "standard"]
    row = {"family": fam, "n": len(g), "n_diverged": int((c.status == "diverged").sum()),
           "n_nonfinite": int((c.status == "ok").sum()) - len(g),
           "monotonic_pct": 100 * float(g.monotonic.mean()) if len(g) else float("nan")}
    for m in MEAN_STD:
        row[f"{m}_mean"], row[f"{m}_std"] = float(g[m].mean()), float(g[m].std(ddof=1))
    for m in METRICS:
        row[f"p_{m}"] = float("nan") if fam == "standard" else ttest(g[m], base[m])
    return row


def table4(curves: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 4 from curve rows: one row per family, columns TABLE_COLUMNS.

    Diverged members (no curve) and curves with non-finite losses are excluded and counted.
    """
    per = member_metrics(curves)
    rows = [_family_row(f, curves, per) for f in ordered_families(curves.family)]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
