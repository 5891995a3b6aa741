"""Monotonic linear interpolation (paper Section 5.4, Table 4, Figure 5) on any zoo in the store.

For each trained member, L(alpha) is the training loss with the member's label smoothing at
theta(alpha) = (1 - alpha) theta_0 + alpha theta_T, for `alphas` evenly spaced alpha in [0, 1].
Only trainable entries are interpolated: W-Asym's fixed entries and FiGLU's F are buffers of the
family's network, shared by the zoo, and stay constant along the line.

Which loss. By default the un-augmented training images the member trained on (the zoo recipe's
subset of CIFAR-10), the same images its recorded train_loss uses, so L(1) reproduces it;
`n_eval` takes a seeded subset of them. `augmented=True` evaluates one augmented copy of that set,
drawn once from `eval_seed` by the training engine's augmentation and shared by every
(member, alpha) point; the companion code instead sent every alpha through its randomly
augmenting train loader, so its curves carry augmentation noise.

Metrics, as the paper defines them (alpha_0 = 0 < ... < alpha_{A-1} = 1, interior i = 1..A-2):
    Delta            = max_i L(alpha_{i+1}) - L(alpha_i); monotonic iff Delta <= 0
    local convexity  = fraction of interior i with L_{i-1} - 2 L_i + L_{i+1} >= 0
    global convexity = fraction of interior i with L_i <= (1 - alpha_i) L_0 + alpha_i L_{A-1}
The companion code's global convexity draws its line through the first two points,
`results[0] + (results[1] - results[0]) * xs`; we follow the paper: the chord between the endpoints.
Table 4 reports mean and sample std (ddof=1) over members; each asymmetric family gets a
two-sided Student t-test against standard (scipy.stats.ttest_ind) per metric, "% monotonic"
being tested as a 0/1 indicator.

Speed. A (member, alpha) point is one row of a [rows, P] matrix. On CUDA, `points` rows run as
one packed forward pass (zoo.train.evaluate.evaluate_flat: vmap over stacked parameters). On CPU a
packed forward is slower than separate ones (benchmarks/mli_speed.py), so each of `workers`
processes evaluates its chunk of members one point at a time.

Where things go: `out` (default `<zoo>/mli`) holds
    family=<f>/part-<first member id>.parquet   curves, one file per evaluated chunk of members
    table4.md, table4.csv, table4.tex, figure5.png, manifest.json
A curve row is (member_id, family, index, status, alphas, losses, train_loss_recorded); diverged
members get a row without a curve, so they are counted, and never retried. Resume: members with a
row are skipped; a rerun with other evaluation settings into the same `out` is refused.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import zoo
from zoo.validate import check as _check
from zoo.validate import from_dict, is_int as _is_int
from zoo.train.augment import augment, draw_epoch
from zoo.data import data_label
from zoo.train.evaluate import evaluate_flat, normalize
from zoo.families import LABELS, TEX_LABELS, check_family
from zoo.recipe import Recipe
from zoo.store import atomic_write_parquet, open_zoo
from zoo.store.fs import atomic_write_bytes
from zoo.store.manifest import code_version, package_versions

log = logging.getLogger(__name__)

PAPER_TABLE4 = {  # THE PAPER'S numbers (Lim et al. 2024, Table 4; 300 members per family), not ours
    "standard": {"delta": (0.079, 0.109), "monotonic_pct": 26.3, "local": (0.548, 0.139), "global": (0.823, 0.229)},
    "sigma_asym": {"delta": (0.004, 0.047), "monotonic_pct": 87.3, "local": (0.675, 0.143), "global": (0.976, 0.098)},
    "w_asym": {"delta": (-0.027, 0.026), "monotonic_pct": 100.0, "local": (0.769, 0.165), "global": (1.0, 0.0)},
}
METRICS = ("delta", "monotonic", "local", "global")  # per-member MLI metrics, in Table 4's order
CURVE_COLUMNS = ("member_id", "family", "index", "status", "alphas", "losses", "train_loss_recorded")
CUDA_POINTS = 64  # default (member, alpha) rows per packed CUDA forward; see benchmarks/mli_speed.py


# ---------------------------------------------------------------------------------------------
# Config

@dataclass(frozen=True)
class MliConfig:
    zoo: str  # path of the zoo in the store (a folder made by zoo.store.init_zoo)
    out: str | None = None  # output folder; None = <zoo>/mli
    data: str | None = None  # CIFAR-10 root; None = $SYMZOO_DATA or ~/.cache/symzoo
    families: tuple[str, ...] | None = None  # subset of the zoo's families; None = all of them
    members: int | None = None  # first N members (by index) per family, diverged included, >= 1; None = all
    alphas: int = 25  # points per curve, evenly spaced in [0, 1], >= 3
    n_eval: int | None = None  # seeded subset of the recipe's train images, >= 1; None = all
    eval_seed: int = 0  # seed of that subset and of the augmented copy, >= 0
    augmented: bool = False  # evaluate on one fixed augmented copy (companion code: augmented)
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    workers: int | None = None  # CPU processes, >= 1; None = os.cpu_count(); CUDA uses one
    batch: int = 500  # images per forward pass, >= 1
    points: int | None = None  # (member, alpha) rows per forward, >= 1; None = 1 on CPU, CUDA_POINTS on CUDA
    chunk: int = 16  # members per task and per curve file (the unit of resume), >= 1
    autocast: bool = False  # bf16 autocast on CUDA; off: second differences are small
    top: int = 20  # curves per family panel in figure 5 (lowest recorded train loss), >= 1

    def __post_init__(self):
        for name in ("zoo", "out", "data"):  # paths are kept as strings: the config goes to JSON
            v = getattr(self, name)
            ok = (v is None and name != "zoo") or (isinstance(v, (str, os.PathLike)) and os.fspath(v) != "")
            _check(name, v, ok, "a non-empty path" + ("" if name == "zoo" else " or None"))
            object.__setattr__(self, name, None if v is None else os.fspath(v))
        if self.families is not None:
            object.__setattr__(self, "families", tuple(check_family(f) for f in self.families))
        for name in ("members", "n_eval", "workers", "points"):
            v = getattr(self, name)
            _check(name, v, v is None or (_is_int(v) and v >= 1), "None or an int >= 1")
        for name, low in (("alphas", 3), ("eval_seed", 0), ("batch", 1), ("chunk", 1), ("top", 1)):
            v = getattr(self, name)
            _check(name, v, _is_int(v) and v >= low, f"an int >= {low}")
        _check("device", self.device, self.device == "cpu" or self.device.split(":")[0] == "cuda",
               '"cpu", "cuda" or "cuda:N"')
        for name in ("augmented", "autocast"):
            _check(name, getattr(self, name), isinstance(getattr(self, name), bool), "a bool")
        _check("autocast", self.autocast, not (self.autocast and self.device == "cpu"), "False on device cpu")

    @classmethod
    def from_dict(cls, d: dict) -> "MliConfig":
        return from_dict(cls, d, "MliConfig")

    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.zoo) / "mli"

    def n_workers(self) -> int:
        return 1 if self.device != "cpu" else (self.workers or os.cpu_count() or 1)

    def n_points(self) -> int:
        return self.points or (1 if self.device == "cpu" else CUDA_POINTS)


# ---------------------------------------------------------------------------------------------
# Metrics

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
    """alphas [A] evenly spaced 0..1, losses [N, A] -> {"delta", "monotonic", "local", "global"} each [N].

    The paper's definitions (module docstring); the centred second difference needs no 1/h^2
    factor since only its sign counts.
    """
    alphas, losses = _check_curves(alphas, losses)
    delta = np.diff(losses, axis=1).max(axis=1)
    second = losses[:, :-2] - 2 * losses[:, 1:-1] + losses[:, 2:]
    inner = alphas[1:-1]
    chord = (1 - inner) * losses[:, :1] + inner * losses[:, -1:]
    return {
        "delta": delta,
        "monotonic": delta <= 0,
        "local": (second >= 0).mean(axis=1),
        "global": (losses[:, 1:-1] <= chord).mean(axis=1),
    }


# ---------------------------------------------------------------------------------------------
# Interpolation and evaluation

def interpolate(theta0: torch.Tensor, theta_t: torch.Tensor, alphas: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """theta0, theta_t [N, P], alphas [A], rows [R] in 0..N*A-1 -> [R, P].

    Row r is member r // A at alpha r % A. At alpha 0 and 1 the result is exactly theta0 / theta_t.
    """
    n_alpha = len(alphas)
    m, a = rows // n_alpha, alphas.to(theta0)[rows % n_alpha].unsqueeze(1)
    return (1 - a) * theta0[m] + a * theta_t[m]


@torch.no_grad()
def single_loss(net: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, smoothing: float,
                *, batch: int = 500) -> float:
    """Mean smoothed cross-entropy of one [P] vector on x [M, 3, 32, 32] uint8, y [M]: a plain forward."""
    zoo.unflatten(net, flat)
    device = next(net.parameters()).device
    total = 0.0
    for start in range(0, len(y), batch):
        logits = net(normalize(x[start : start + batch].to(device)))
        yb = y[start : start + batch].to(device)
        total += F.cross_entropy(logits.float(), yb, label_smoothing=smoothing, reduction="sum").item()
    return total / len(y)


def curve_losses(net: nn.Module, theta0: torch.Tensor, theta_t: torch.Tensor, smoothing: torch.Tensor,
                 alphas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, points: int, batch: int = 500,
                 autocast: bool = False) -> torch.Tensor:
    """theta0, theta_t [N, P], smoothing [N], alphas [A] -> L [N, A] (float64, CPU).

    `points` (member, alpha) rows share one packed forward; with points == 1 each row is a
    plain forward of `net`, which is faster on CPU than a vmap of one.
    """
    n, n_alpha = theta0.shape[0], len(alphas)
    net.to(theta0.device)
    out = torch.empty(n * n_alpha, dtype=torch.float64)
    for start in range(0, n * n_alpha, points):
        rows = torch.arange(start, min(start + points, n * n_alpha), device=theta0.device)
        flat, s = interpolate(theta0, theta_t, alphas, rows), smoothing.to(theta0.device)[rows // n_alpha]
        if len(rows) == 1:
            out[start] = single_loss(net, flat[0], x, y, float(s[0]), batch=batch)
        else:
            out[start : start + len(rows)] = evaluate_flat(net, flat, x, y, s, batch=batch, autocast=autocast)["loss"].double()
    return out.view(n, n_alpha)


# ---------------------------------------------------------------------------------------------
# Curves on disk

CURVE_SCHEMA = pa.schema([
    ("member_id", pa.string()),
    ("family", pa.string()),
    ("index", pa.int64()),
    ("status", pa.string()),  # "ok" | "diverged" (then alphas and losses are null)
    ("alphas", pa.list_(pa.float64())),  # [A]
    ("losses", pa.list_(pa.float64())),  # [A] L(alpha)
    ("train_loss_recorded", pa.float64()),  # the store's train_loss of the member
])


def write_curves(out: Path, rows: pd.DataFrame) -> Path:
    """Commit the curve rows of one family's chunk as `family=<f>/part-<first member id>.parquet`."""
    family, first = rows.family.iloc[0], rows.member_id.iloc[0]
    table = pa.Table.from_pandas(rows[list(CURVE_COLUMNS)], schema=CURVE_SCHEMA, preserve_index=False)
    rel = f"family={family}/part-{first}.parquet"
    atomic_write_parquet(str(out), rel, table)
    return Path(out) / rel


def read_curves(out: Path) -> pd.DataFrame:
    """Every committed curve row under `out` (files starting with "." or "_" are not committed)."""
    files = sorted(p for p in Path(out).glob("family=*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in CURVE_COLUMNS})
    df = pd.concat([pq.read_table(p, schema=CURVE_SCHEMA).to_pandas() for p in files], ignore_index=True)
    dup = df.member_id[df.member_id.duplicated()]
    if len(dup):
        raise ValueError(f"curves under {out}: member {dup.iloc[0]!r} appears twice; remove one of its files")
    return df


# ---------------------------------------------------------------------------------------------
# Table 4

TABLE_COLUMNS = (
    "family", "n", "n_diverged", "n_nonfinite", "delta_mean", "delta_std", "monotonic_pct",
    "local_mean", "local_std", "global_mean", "global_std", "p_delta", "p_monotonic", "p_local", "p_global",
)


def _finite(curves: pd.DataFrame) -> np.ndarray:
    return np.array([s == "ok" and np.isfinite(c).all() for s, c in zip(curves.status, curves.losses)], dtype=bool)


def member_metrics(curves: pd.DataFrame) -> pd.DataFrame:
    """Curve rows -> one row per member with a finite curve: member_id, family, index and METRICS."""
    ok = curves[_finite(curves)].reset_index(drop=True)
    base = ok[["member_id", "family", "index"]]
    if ok.empty:
        return base.assign(**{m: pd.Series(dtype=float) for m in METRICS})
    alphas = np.stack(ok.alphas.to_numpy())
    if not (alphas == alphas[0]).all():
        raise ValueError("curves: alphas differ between members; one out folder holds one alpha grid")
    return base.assign(**mli_metrics(alphas[0], np.stack(ok.losses.to_numpy())))


def _ordered(names) -> list[str]:
    """Families present, in zoo.FAMILIES order."""
    present = set(names)
    return [f for f in zoo.FAMILIES if f in present]


PVALUES_ABOUT = ("Two-sided Student t-tests (equal variances, scipy.stats.ttest_ind) against standard, per member "
                 "metric (% monotonic as a 0/1 indicator); — where a side has fewer than two members or both "
                 "sides are constant:")


def _ttest(a: pd.Series, b: pd.Series) -> float:
    """Two-sided Student t-test p-value; NaN when either side has fewer than two members."""
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
    for m in ("delta", "local", "global"):
        row[f"{m}_mean"], row[f"{m}_std"] = float(g[m].mean()), float(g[m].std(ddof=1))
    for m in METRICS:
        row[f"p_{m}"] = float("nan") if fam == "standard" else _ttest(g[m], base[m])
    return row


def table4(curves: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 4 from curve rows: one row per family, columns TABLE_COLUMNS.

    Diverged members (no curve) and curves with non-finite losses are excluded and counted.
    """
    per = member_metrics(curves)
    rows = [_family_row(f, curves, per) for f in _ordered(curves.family)]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def paper_table4() -> pd.DataFrame:
    """The paper's Table 4 (PAPER_TABLE4) in `table4`'s columns; its p-values are only "< .001"."""
    diverged = {"standard": 0, "sigma_asym": 24, "w_asym": 0}  # of 300, paper Appendix E.4
    rows = []
    for fam, r in PAPER_TABLE4.items():
        rows.append({"family": fam, "n": 300 - diverged[fam], "n_diverged": diverged[fam], "n_nonfinite": 0,
                     "monotonic_pct": r["monotonic_pct"],
                     **{f"{m}_{k}": r[m][i] for m in ("delta", "local", "global") for i, k in enumerate(("mean", "std"))}})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def read_table4(out: Path) -> pd.DataFrame:
    """The Table 4 that `run` wrote to `out` (table4.csv), in `table4`'s columns."""
    return pd.read_csv(Path(out) / "table4.csv")


def beside_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Ours and the paper's Table 4 side by side: one row per (family, column), for reports."""
    paper, ours = paper_table4().set_index("family"), table.set_index("family")
    cols = ["n", "n_diverged", "delta_mean", "delta_std", "monotonic_pct", "local_mean", "local_std",
            "global_mean", "global_std"]
    rows = [{"family": f, "column": c, "ours": ours.at[f, c], "paper": paper.at[f, c]}
            for f in ours.index if f in paper.index for c in cols]
    return pd.DataFrame(rows, columns=["family", "column", "ours", "paper"])


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _p(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.2g}"


def markdown_table(table: pd.DataFrame) -> str:
    head = "| family | n | diverged | non-finite | Δ ↓ | % monotonic ↑ | local convexity ↑ | global convexity ↑ |"
    lines = [head, "|" + "---|" * 8]
    for r in table.itertuples():
        lines.append(f"| {LABELS[r.family]} | {r.n} | {r.n_diverged} | {r.n_nonfinite} | {_pm(r.delta_mean, r.delta_std)} "
                     f"| {r.monotonic_pct:.1f}% | {_pm(r.local_mean, r.local_std)} | {_pm(r.global_mean, r.global_std)} |")
    return "\n".join(lines)


def markdown_pvalues(table: pd.DataFrame) -> str:
    lines = ["| family vs standard | p(Δ) | p(monotonic) | p(local) | p(global) |", "|" + "---|" * 5]
    for r in table[table.family != "standard"].itertuples():
        lines.append(f"| {LABELS[r.family]} | {_p(r.p_delta)} | {_p(r.p_monotonic)} | {_p(r.p_local)} | {_p(r.p_global)} |")
    return "\n".join(lines)


def latex_table(table: pd.DataFrame) -> str:
    def pm(m, s):
        return f"${m:.3f} \\pm {s:.3f}$"

    lines = [r"\begin{tabular}{lrcccc}", r"\toprule",
             r"Family & $n$ & $\Delta \downarrow$ & \% monotonic $\uparrow$ & local convexity $\uparrow$ & global convexity $\uparrow$ \\",
             r"\midrule"]
    for r in table.itertuples():
        lines.append(f"{TEX_LABELS[r.family]} & {r.n} & {pm(r.delta_mean, r.delta_std)} & "
                     f"{r.monotonic_pct:.1f}\\% & {pm(r.local_mean, r.local_std)} & {pm(r.global_mean, r.global_std)} \\\\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", ""])


def write_tables(table: pd.DataFrame, out: Path, about: str) -> None:
    """table4.csv (full precision), table4.md (ours, t-tests, the paper's), table4.tex (ours)."""
    out = Path(out)
    table.to_csv(out / "table4.csv", index=False)
    md = [f"# Table 4: monotonic linear interpolation\n\n{about}\n", markdown_table(table),
          f"\n{PVALUES_ABOUT}\n",
          markdown_pvalues(table),
          "\nThe paper's Table 4 (Lim et al. 2024; 300 members per family; all asymmetric differences p < .001):\n",
          markdown_table(paper_table4()), ""]
    (out / "table4.md").write_text("\n".join(md))
    (out / "table4.tex").write_text(latex_table(table))


# ---------------------------------------------------------------------------------------------
# Figure 5

def plot_figure5(curves: pd.DataFrame, path: Path, *, top: int = 20, data: dict | None = None) -> Path:
    """One panel per family: L(alpha) of its `top` members with the lowest recorded train loss;
    `data` (the zoo's data identity) is named under the title."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    ok = curves[_finite(curves)]
    fams = _ordered(ok.family)
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


# ---------------------------------------------------------------------------------------------
# The images L(alpha) is measured on

EVAL_STREAM = 7  # sub-stream of eval_seed that picks the n_eval subset


def augmented_copy(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented copy of (x [M, 3, 32, 32] uint8, y [M]): the training engine's draws and ops,
    with the whole set as one batch of epoch 0 of training seed `seed`."""
    draw = draw_epoch(seed, 0, len(y), replace(recipe, batch_size=len(y)))
    order = draw.order[0]
    return augment(x[order], draw.flip[0], draw.shift[0], draw.corner[0], recipe), y[order]


def eval_set(manifest: dict, cfg: MliConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x [M, 3, 32, 32] uint8, y [M], what they are): the zoo recipe's train images, as configured."""
    data = zoo.load_cifar10(cfg.data)
    want = manifest["data"]["sha256"]
    if data.identity["sha256"] != want:
        raise ValueError(f"data={cfg.data!r}: holds {data.identity['name']} (sha256 {data.identity['sha256']}); "
                         f"the zoo was trained on sha256 {want} ({manifest['data'].get('name')})")
    recipe = Recipe.from_dict(manifest["recipe"])
    train = recipe.apply_subset(data)
    x, y = train.train_x, train.train_y
    if cfg.n_eval is not None:
        _check("n_eval", cfg.n_eval, cfg.n_eval <= len(y), f"<= {len(y)}, the recipe's training images")
        keep = np.sort(np.random.default_rng([cfg.eval_seed, EVAL_STREAM]).permutation(len(y))[: cfg.n_eval])
        x, y = x[keep], y[keep]
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    if cfg.augmented:
        x, y = augmented_copy(x, y, recipe, cfg.eval_seed)
    about = {"data": data.identity["name"], "data_sha256": want, "recipe_n_train": recipe.n_train,
             "recipe_subset_seed": recipe.subset_seed, "n_images": len(y), "n_eval": cfg.n_eval,
             "eval_seed": cfg.eval_seed, "augmented": cfg.augmented}
    return x, y, about


def describe(about: dict, alphas: int) -> str:
    """One sentence for table4.md: which loss the curves hold."""
    how = (f"one fixed augmented copy (the training augmentation, seed {about['eval_seed']})" if about["augmented"]
           else "un-augmented")
    subset = "" if about["n_eval"] is None else f"a seeded subset (eval_seed {about['eval_seed']}) of "
    return (f"L(α): mean training loss with each member's label smoothing, at {alphas} evenly spaced α, on "
            f"{subset}the zoo recipe's training images, {how}: {about['n_images']} images of {about['data']}.")


# ---------------------------------------------------------------------------------------------
# Evaluation of tasks: in this process (CUDA, or one CPU worker) or one process per CPU core

@dataclass(frozen=True)
class Task:
    family: str
    asym_seed: int  # the zoo's seed of this family's fixed pieces
    rows: pd.DataFrame  # member_id, family, index, status, train_loss_recorded, label_smoothing
    theta0: np.ndarray  # [n, P] float32 initial trainable entries
    theta_t: np.ndarray  # [n, P] float32 trained entries


class Evaluator:
    """Holds the evaluation images on the device and one network per (family, asym_seed)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cfg: MliConfig):
        self.device, self.cfg, self.nets = torch.device(cfg.device), cfg, {}
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.alphas = torch.tensor(alpha_grid(cfg.alphas), device=self.device)

    def __call__(self, family: str, asym_seed: int, theta0, theta_t, smoothing) -> np.ndarray:
        """[n, P], [n, P], [n] -> L [n, A]."""
        if (family, asym_seed) not in self.nets:
            self.nets[family, asym_seed] = zoo.build(family, asym_seed).to(self.device)
        net = self.nets[family, asym_seed]
        t0, tt = (torch.as_tensor(a, device=self.device) for a in (theta0, theta_t))
        s = torch.as_tensor(np.asarray(smoothing, dtype=np.float32), device=self.device)
        with self._precision():
            losses = curve_losses(net, t0, tt, s, self.alphas, self.x, self.y, points=self.cfg.n_points(),
                                  batch=self.cfg.batch, autocast=self.cfg.autocast)
        return losses.numpy()


    def _precision(self):
        """fp32 means fp32 on CUDA: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa)."""
        if self.device.type != "cuda" or self.cfg.autocast:
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=True, benchmark=False, allow_tf32=False)


_WORKER: dict = {}  # a pool worker's Evaluator


def _init_worker(x: np.ndarray, y: np.ndarray, cfg: MliConfig) -> None:
    torch.set_num_threads(1)  # one process per core: threads would only contend
    _WORKER["evaluate"] = Evaluator(torch.from_numpy(x), torch.from_numpy(y), cfg)


def _work(task: Task) -> np.ndarray:
    return _WORKER["evaluate"](task.family, task.asym_seed, task.theta0, task.theta_t, task.rows.label_smoothing)


def curve_rows(task: Task, losses: np.ndarray, alphas: np.ndarray) -> pd.DataFrame:
    return task.rows.assign(alphas=[alphas] * len(task.rows), losses=list(losses))


def evaluate_curves(tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig):
    """Yield (task, L [n, A]) as tasks finish: in this process (CUDA, one worker) or a spawn pool."""
    workers = min(cfg.n_workers(), len(tasks))
    if workers <= 1:
        evaluate = Evaluator(x, y, cfg)
        for t in tasks:
            yield t, evaluate(t.family, t.asym_seed, t.theta0, t.theta_t, t.rows.label_smoothing)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(x.numpy(), y.numpy(), cfg)) as pool:
        futures = {pool.submit(_work, t): t for t in tasks}
        for f in as_completed(futures):
            yield futures[f], f.result()


def evaluate_tasks(tasks: list[Task], x: torch.Tensor, y: torch.Tensor, cfg: MliConfig, out: Path) -> None:
    """Evaluate every task and commit its curves as soon as it is done (the unit of resume)."""
    alphas = alpha_grid(cfg.alphas)
    for i, (task, losses) in enumerate(evaluate_curves(tasks, x, y, cfg)):
        path = write_curves(out, curve_rows(task, losses, alphas))
        log.info("mli: %s: %d curves -> %s (task %d of %d)", task.family, len(losses), path, i + 1, len(tasks))


# ---------------------------------------------------------------------------------------------
# The stage

MEMBER_COLUMNS = ["member_id", "index", "family", "status", "label_smoothing", "train_loss"]


def select_members(z, family: str, limit: int | None) -> pd.DataFrame:
    """The family's first `limit` members by index (all when None), diverged ones included."""
    m = z.members(columns=MEMBER_COLUMNS, family=family).sort_values("index", kind="stable")
    m = m.head(limit) if limit is not None else m
    return m.rename(columns={"train_loss": "train_loss_recorded"}).reset_index(drop=True)


def _weights(z, family: str, which: str, ids: pd.Series) -> np.ndarray:
    """[len(ids), P] float32 weights of those (ok) members, in the order of `ids`."""
    arr, stored = z.weights(family, which=which, status="ok")
    pos = {m: i for i, m in enumerate(stored)}
    return np.ascontiguousarray(arr[[pos[m] for m in ids]])


def family_tasks(z, family: str, todo: pd.DataFrame, cfg: MliConfig) -> list[Task]:
    """Chunks of the ok members still to do, balanced over the workers."""
    ok = todo[todo.status == "ok"].reset_index(drop=True)
    if ok.empty:
        return []
    theta0, theta_t = _weights(z, family, "init", ok.member_id), _weights(z, family, "final", ok.member_id)
    size = min(cfg.chunk, math.ceil(len(ok) / cfg.n_workers()))
    z.network(family)  # refuses code that builds other fixed pieces than the zoo's members were trained with
    seed = z.manifest["families"][family]["asym_seed"]
    return [Task(family, seed, ok.iloc[s : s + size].reset_index(drop=True), theta0[s : s + size], theta_t[s : s + size])
            for s in range(0, len(ok), size)]


def _run_families(cfg: MliConfig, manifest: dict) -> list[str]:
    have = list(manifest["families"])
    for f in cfg.families or ():
        _check("families", cfg.families, f in have, f"families of this zoo: {have}")
    return [f for f in zoo.FAMILIES if f in (cfg.families or have)]


CLAIM = ("Paper Section 5.4 (Table 4, Figure 5): the training loss along the line from each member's "
         "initialisation to its trained weights is more monotonic and convex for asymmetric networks.")


def claim(out: Path, cfg: MliConfig, manifest: dict, about: dict) -> None:
    """Write out/manifest.json; refuse an out folder whose curves were measured differently."""
    measurement = {"zoo_seed": manifest["zoo_seed"], "alphas": cfg.alphas,
                   "precision": "bf16 autocast" if cfg.autocast else "fp32", **about}
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())["measurement"]
        diff = {k: (old.get(k), v) for k, v in measurement.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"out={str(out)!r}: its curves were measured otherwise, {{setting: (stored, asked)}} "
                             f"= {diff}; choose another --out")
    doc = {"stage": "mli", "claim": CLAIM, "measurement": measurement, "config": asdict(cfg),
           "code": code_version(), "packages": package_versions()}
    atomic_write_bytes(str(out), "manifest.json", json.dumps(doc, indent=2).encode())


def _out_dir(cfg: MliConfig) -> Path:
    if cfg.out is None and "://" in cfg.zoo:
        raise ValueError(f"out=None: the zoo {cfg.zoo!r} is not a local folder; give a local --out")
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    return out


def pending(z, cfg: MliConfig, out: Path) -> tuple[list[str], list[Task]]:
    """(ids of the selected members, tasks for those without curves); diverged ones get their row now."""
    done, selected, tasks = set(read_curves(out).member_id), [], []
    for fam in _run_families(cfg, z.manifest):
        m = select_members(z, fam, cfg.members)
        selected += list(m.member_id)
        todo = m[~m.member_id.isin(done)]
        diverged = todo[todo.status != "ok"]
        if len(diverged):
            write_curves(out, diverged.assign(alphas=None, losses=None))
        tasks += family_tasks(z, fam, todo, cfg)
    return selected, tasks


def run(cfg: MliConfig) -> Path:
    """Evaluate the curves not yet stored, then write Table 4 and Figure 5; returns the out folder."""
    z = open_zoo(cfg.zoo)
    out = _out_dir(cfg)
    x, y, about = eval_set(z.manifest, cfg)
    claim(out, cfg, z.manifest, about)
    selected, tasks = pending(z, cfg, out)
    evaluate_tasks(tasks, x, y, cfg, out)
    curves = read_curves(out)
    curves = curves[curves.member_id.isin(selected)].reset_index(drop=True)
    write_tables(table4(curves), out, describe(about, cfg.alphas))
    plot_figure5(curves, out / "figure5.png", top=cfg.top, data=z.manifest.get("data"))
    return out
