"""Monotonic linear interpolation (paper Section 5.4, Table 4, Figure 5) on any zoo in the store.

For each trained member, L(alpha) is the training loss with the member's label smoothing at
theta(alpha) = (1 - alpha) theta_0 + alpha theta_T, for `alphas` evenly spaced alpha in [0, 1].
Only trainable entries are interpolated: W-Asym's fixed entries and FiGLU's F are buffers of the
family's network, shared by the zoo, and stay constant along the line.

Which images (`eval_data`). The zoo recipe's training images (all, or a seeded `n_eval` subset):
  clean (default)      un-augmented, fp32 unless autocast: the same images the member's recorded
                       train_loss uses, so L(1) reproduces it; the cleanest measurement.
  augmented_fixed      one augmented copy of the set, drawn once from `eval_seed` by the training
                       engine's augmentation and shared by every (member, alpha) point.
  augmented_per_alpha  a fresh augmentation draw per (member, alpha) point, a pure function of
                       (eval_seed, member index, alpha index), with zoo.train.augment's draws and ops.
                       Closest to the companion code, which sent every alpha through its augmenting
                       train loader (49,664 images with drop_last, fp16), so its curves carry
                       augmentation noise: local convexity, a sign of second differences, is the
                       metric most sensitive to it, and this setting lets ours be compared with the
                       paper's on that footing.

Metrics (alpha_0 = 0 < ... < alpha_{A-1} = 1, interior i = 1..A-2):
    Delta            = max_i L(alpha_{i+1}) - L(alpha_i); monotonic iff Delta <= 0
    local convexity  = fraction of interior i with L_{i-1} - 2 L_i + L_{i+1} >= 0
    global convexity, two definitions, both reported:
      the paper's chord  (`global`): fraction of interior i with L_i <= (1 - alpha_i) L_0 + alpha_i L_{A-1},
                         the definition the paper's text gives;
      the companion's line (`global_line`): fraction of interior i with L_i <= L_0 + (L_1 - L_0) alpha_i,
                         what the companion code computes (`results[0] + (results[1] - results[0]) * xs`
                         with xs = linspace(0, 1, A)): the line through (0, L(alpha_0)) and (1, L(alpha_1)),
                         whose slope is the first step's difference per unit alpha. On a monotonic curve
                         every interior L_i <= L_1 <= the line, so it scores exactly 1: a much weaker test.
    The paper's Table 4 most likely comes from the companion's line: W-Asym is 100% monotonic and
    scores 1.00 +- .000 (forced under the line, not under the chord), and every family's global
    convexity is at least its monotonic fraction (.823 >= .263, .976 >= .873), as the line implies.
Table 4 reports mean and sample std (ddof=1) over members; each asymmetric family gets a
two-sided Student t-test against standard (scipy.stats.ttest_ind) per metric, "% monotonic"
being tested as a 0/1 indicator.

Speed. A (member, alpha) point is one row of a [rows, P] matrix. On CUDA (device "auto" picks it
when there is one), `points` consecutive alphas of one member run as one packed forward pass (vmap
over stacked parameters), never rows of two members: fewer rows when `points` exceeds `alphas`.
On CPU a packed forward is slower than separate ones (benchmarks/mli_speed.py), so each of
`workers` processes evaluates its chunk of members one point at a time.

Where (`executor`). local (default): this process, or its pool of `workers` CPU processes. ray:
each task a Ray task on an embedded Ray or a cluster (`address`), one CPU and `gpus_per_task` of a
GPU each (cluster/mli.py); the driver sends a task's weights with it, so the workers need neither
the zoo nor `out`, and it writes each task's curves as they arrive; each worker checks the networks
it builds against the zoo's fixed_sha256. Both run the same Evaluator, and a member's curve is a
function of the member and the settings, not of where tasks are cut (a forward holds only that
member's rows, in shapes the settings fix): equal bit for bit, on the same device, whatever the
executor, its slots, or what a resumed run found stored (tests/test_mli_ray.py, on CPU with and
without packing; on CUDA untested, and to be expected only on the same GPU model and library
versions).

Where things go: `out` (default `<zoo>/mli`) holds
    family=<f>/part-<first member id>.parquet   curves, one file per evaluated chunk of members
    table4.md, table4.csv, table4.tex, figure5.png, manifest.json (the measurement, eval_data included)
A curve row is (member_id, family, index, status, alphas, losses, train_loss_recorded); diverged
members get a row without a curve, so they are counted, and never retried. Resume: members with a
row are skipped; a rerun with other evaluation settings into the same `out` is refused.

Modules, one concept each: config (MliConfig), metrics (per-curve metrics, Table 4's statistics),
evaluate (images, interpolation, forwards, executor local), curves (Parquet curves, resume), table
(Table 4 files), figure (Figure 5), stage (run).
"""
from .config import CUDA_POINTS, EVAL_DATA, MliConfig, resolved
from .curves import CURVE_COLUMNS, CURVE_SCHEMA, pending, read_curves, select_members, write_curves
from .evaluate import (AlphaDraws, Evaluator, LocalMliExecutor, Task, augmented_copy, curve_losses, describe, eval_set,
                       evaluate_curves, interpolate, packed_views_loss, single_loss)
from .figure import plot_figure5
from .metrics import METRICS, TABLE_COLUMNS, alpha_grid, member_metrics, mli_metrics, table4
from .stage import CLAIM, run
from .table import (GLOBAL_ABOUT, PAPER_GLOBAL_ABOUT, PAPER_TABLE4, PVALUES_ABOUT, beside_paper, latex_table,
                    markdown_pvalues, markdown_table, paper_section, paper_table4, read_table4, write_tables)

__all__ = [
    "AlphaDraws", "CLAIM", "CUDA_POINTS", "CURVE_COLUMNS", "CURVE_SCHEMA", "EVAL_DATA", "Evaluator", "GLOBAL_ABOUT",
    "LocalMliExecutor", "METRICS", "MliConfig", "PAPER_GLOBAL_ABOUT", "PAPER_TABLE4", "PVALUES_ABOUT", "TABLE_COLUMNS",
    "Task", "alpha_grid", "augmented_copy", "beside_paper", "curve_losses", "describe", "eval_set", "evaluate_curves",
    "interpolate", "latex_table", "markdown_pvalues", "markdown_table", "member_metrics", "mli_metrics",
    "packed_views_loss", "paper_section", "paper_table4", "pending", "plot_figure5", "read_curves", "read_table4",
    "resolved", "run", "select_members", "single_loss", "table4", "write_curves", "write_tables",
]
