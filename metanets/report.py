"""Table 3 and the scatter plots, built from the runs' JSON records alone.

`table3(runs)` reads the records of the final runs (phase "final") and returns a DataFrame:
one row per metanetwork (plus one per extra row, e.g. "mlp (standardized inputs)" or "mlp
(aligned)": `row_of`), columns (family, stat) with stat in r2_mean, r2_std, tau_mean, tau_std
(sample std, ddof=1, over the runs), runs (n), lr (the chosen learning rate) and align_s (weight
matching's seconds per member for an aligned row, NaN otherwise). The writers
render that frame; nothing in a table is typed in. `paper_table3()` gives the paper's numbers in
the same shape, for side-by-side reports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zoo.data import data_label
from zoo.families import LABELS as FAMILY_NAMES
from zoo.families import TEX_LABELS

from .registry import METANETS, display

PAPER_TABLE3 = {  # THE PAPER'S numbers (Lim et al. 2024, Table 3; R^2 and tau, mean, std over 5 runs), not ours
    "mlp": {"standard": (-0.171, 0.11, 0.311, 0.02), "w_asym": (0.594, 0.12, 0.864, 0.01)},
    "dmc": {"standard": (0.950, 0.01, 0.787, 0.02), "w_asym": (0.967, 0.01, 0.911, 0.01)},
    "deepsets": {"standard": (0.855, 0.01, 0.617, 0.03), "w_asym": (0.936, 0.00, 0.858, 0.00)},
    "statnn": {"standard": (0.976, 0.00, 0.866, 0.00), "w_asym": (0.978, 0.00, 0.935, 0.01)},
}
PAPER_CHOSEN_LRS = {  # THE PAPER'S chosen learning rates (Table 9), out of metanets.train.LR_GRID
    "mlp": {"standard": 1e-4, "w_asym": 1e-4}, "dmc": {"standard": 1e-3, "w_asym": 5e-3},
    "deepsets": {"standard": 1e-2, "w_asym": 5e-3}, "statnn": {"standard": 1e-3, "w_asym": 1e-2},
}
STATS = ("r2_mean", "r2_std", "tau_mean", "tau_std", "runs", "lr", "align_s")


def _ordered(names, order) -> list:
    return sorted(set(names), key=lambda n: (list(order).index(n) if n in order else len(order), n))


def row_of(record: dict) -> str:
    """A run's Table 3 row: its metanet, or the `row` the stage gave a run of an extra row
    ("mlp (standardized inputs)"); records without one (older files) are their metanet's."""
    return record.get("row") or record["metanet"]


def _rows_ordered(records: list[dict]) -> list[str]:
    """Rows in registry order, each metanet's extra rows right after it."""
    base = {row_of(r): r["metanet"] for r in records}
    order = list(METANETS)
    return sorted(base, key=lambda row: (order.index(base[row]) if base[row] in order else len(order),
                                         base[row], row != base[row], row))


def label(row: str) -> str:
    """Display name of a row: "mlp" -> "MLP", "mlp (raw inputs)" -> "MLP (raw inputs)"."""
    name, space, rest = row.partition(" ")
    return display(name) + space + rest


def _cell(records: list[dict]) -> dict:
    r2 = np.array([r["test_r2"] for r in records], dtype=float)
    tau = np.array([r["test_tau"] for r in records], dtype=float)
    std = (lambda v: float(np.std(v, ddof=1))) if len(records) > 1 else (lambda v: float("nan"))
    lrs = {r["lr"] for r in records}
    aligned = [r["alignment"]["seconds_per_member"] for r in records if r.get("alignment")]
    return {"r2_mean": float(np.mean(r2)), "r2_std": std(r2), "tau_mean": float(np.mean(tau)),
            "tau_std": std(tau), "runs": len(records), "lr": lrs.pop() if len(lrs) == 1 else float("nan"),
            "align_s": float(np.mean(aligned)) if aligned else float("nan")}


def table3(runs: list[dict]) -> pd.DataFrame:
    """Final-run records -> rows metanet (`row_of`), columns (family, stat)."""
    final = [r for r in runs if r.get("phase") == "final"]
    if not final:
        raise ValueError("table3: no final runs among the records")
    names = _rows_ordered(final)
    families = _ordered([r["family"] for r in final], FAMILY_NAMES)
    columns = pd.MultiIndex.from_product([families, STATS], names=["family", "stat"])
    rows = []
    for m in names:
        cells = {f: [r for r in final if row_of(r) == m and r["family"] == f] for f in families}
        rows.append([(_cell(c) if c else dict.fromkeys(STATS, np.nan))[s] for f, c in cells.items() for s in STATS])
    frame = pd.DataFrame(rows, index=pd.Index(names, name="metanet"), columns=columns, dtype=float)
    frame.attrs["preprocessing"] = _preprocessing(final)
    frame.attrs["alignment"] = _alignment(final)
    return frame


def _alignment(records: list[dict]) -> str:
    """One sentence on the aligned rows' weight matching (reference, cost); empty without any."""
    done = {r["family"]: r["alignment"] for r in records if r.get("alignment")}
    if not done:
        return ""
    parts = [f"{FAMILY_NAMES.get(f, f)} to member {a['reference']} ({a['reference_rule']}), "
             f"{a['seconds_per_member']:.3f} s per member for {a['members']} members" for f, a in done.items()]
    return "Aligned rows: weight matching of every member, " + "; ".join(parts) + "."


def _preprocessing(records: list[dict]) -> str:
    """What the main rows were trained on, e.g. "raw inputs, fraction targets"; empty for records
    older than the choice, or a mix. An extra row names its own inputs."""
    main = {(r.get("inputs"), r.get("targets")) for r in records if row_of(r) == r["metanet"]}
    if len(main) != 1 or None in next(iter(main)):
        return ""
    inputs, targets = main.pop()
    return f"{inputs} inputs, {targets} targets"


def paper_table3() -> pd.DataFrame:
    """The paper's Table 3 and Table 9 learning rates in `table3`'s shape (runs = 5)."""
    runs = []
    for m, by_family in PAPER_TABLE3.items():
        for f, (r2, r2_sd, tau, tau_sd) in by_family.items():
            runs.append({"metanet": m, "family": f, "r2_mean": r2, "r2_std": r2_sd, "tau_mean": tau,
                         "tau_std": tau_sd, "runs": 5, "lr": PAPER_CHOSEN_LRS[m][f]})
    long = pd.DataFrame(runs).set_index(["metanet", "family"])
    frame = long.unstack("family").swaplevel(axis=1)
    frame = frame.reindex(columns=pd.MultiIndex.from_product([["standard", "w_asym"], STATS]))
    return frame.reindex(_ordered(frame.index, METANETS)).rename_axis(columns=["family", "stat"])


def _pm(frame, m, f, key) -> str:
    mean, std = frame.loc[m, (f, f"{key}_mean")], frame.loc[m, (f, f"{key}_std")]
    if np.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"


def _families(frame) -> list[str]:
    return list(dict.fromkeys(frame.columns.get_level_values("family")))


def _caption(frame) -> str:
    parts = []
    for f in _families(frame):
        runs = sorted({int(v) for v in frame[(f, "runs")].dropna()})
        lrs = ", ".join(f"{label(m)} {frame.loc[m, (f, 'lr')]:g}" for m in frame.index
                        if np.isfinite(frame.loc[m, (f, "lr")]))
        parts.append(f"{FAMILY_NAMES.get(f, f)}: n = {'/'.join(map(str, runs))} runs; lr {lrs}")
    about, aligned = frame.attrs.get("preprocessing"), frame.attrs.get("alignment")
    return ("Test R^2 and Kendall tau at each run's best-validation epoch, mean ± std (ddof 1)"
            + (f"; metanetworks trained on {about}" if about else "") + ". " + "; ".join(parts) + "."
            + (f" {aligned}" if aligned else ""))


def to_markdown(frame: pd.DataFrame) -> str:
    fams = _families(frame)
    head = ["metanet"] + [f"{FAMILY_NAMES.get(f, f)} {k}" for f in fams for k in ("R^2", "tau")]
    rows = [[label(m)] + [_pm(frame, m, f, k) for f in fams for k in ("r2", "tau")] for m in frame.index]
    lines = ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]]
    return "\n".join(lines) + "\n\n" + _caption(frame) + "\n"


def to_latex(frame: pd.DataFrame) -> str:
    fams = _families(frame)
    tex = lambda s: s.replace("±", r"$\pm$")  # noqa: E731
    lines = [r"\begin{tabular}{l" + "cc" * len(fams) + "}", r"\toprule",
             " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{TEX_LABELS.get(f, f)}}}" for f in fams) + r" \\",
             " & " + " & ".join(r"$R^2$ & $\tau$" for _ in fams) + r" \\", r"\midrule"]
    for m in frame.index:
        cells = [tex(_pm(frame, m, f, k)) for f in fams for k in ("r2", "tau")]
        lines.append(" & ".join([label(m), *cells]) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_csv(frame: pd.DataFrame) -> str:
    flat = frame.copy()
    flat.columns = [f"{f}_{s}" for f, s in frame.columns]
    return flat.to_csv()


def write_tables(frame: pd.DataFrame, out: Path, data: dict | None = None) -> list[Path]:
    """table3.md (titled, naming the data copy), table3.csv and table3.tex."""
    paths = [out / "table3.md", out / "table3.csv", out / "table3.tex"]
    md = (f"# Table 3: predicting test accuracy from weights\n\nTest split, mean ± std over runs; "
          f"{data_label(data)}.\n\n{to_markdown(frame)}")
    for path, text in zip(paths, (md, to_csv(frame), to_latex(frame))):
        path.write_text(text)
    return paths


def scatter(runs: list[dict], path: Path, data: dict | None = None) -> Path:
    """Predicted vs true test accuracy on the test split, one panel per (metanet, family), for
    the first final run (index 0) of each; `data` (the zoo's data identity) is named on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = [r for r in runs if r.get("phase") == "final" and r.get("index") == 0]
    metanets = _rows_ordered(first)
    families = _ordered([r["family"] for r in first], FAMILY_NAMES)
    fig, axes = plt.subplots(len(metanets), len(families), figsize=(3.2 * len(families), 3.0 * len(metanets)),
                             squeeze=False, constrained_layout=True)
    for (i, m), (j, f) in ((a, b) for a in enumerate(metanets) for b in enumerate(families)):
        ax = axes[i][j]
        rec = next((r for r in first if row_of(r) == m and r["family"] == f), None)
        if rec is not None:
            _panel(ax, rec)
        ax.set_title(f"{label(m)} / {FAMILY_NAMES.get(f, f)}", fontsize=9)
    data_line = data_label(data, width=int(14 * 3.2 * len(families)))  # ~14 characters of 9 pt text per inch
    fig.suptitle(f"Test split, first final run of each metanetwork and family\n{data_line}", fontsize=9)
    fig.supxlabel("true test accuracy")
    fig.supylabel("predicted test accuracy")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(ax, rec: dict) -> None:
    true, pred = np.array(rec["test_true"]), np.array(rec["test_pred"], dtype=float)
    both = np.concatenate([true, pred[np.isfinite(pred)]])
    lo, hi = float(both.min()), float(both.max())
    pad = 0.05 * (hi - lo) or 0.01
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=0.8, zorder=0)
    ax.scatter(true, pred, s=6, alpha=0.6)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    r2, tau = (np.nan if rec[k] is None else rec[k] for k in ("test_r2", "test_tau"))
    ax.text(0.03, 0.97, f"$R^2$ {r2:.3f}\n$\\tau$ {tau:.3f}\nn {len(true)}, lr {rec['lr']:g}",
            transform=ax.transAxes, va="top", fontsize=8)
