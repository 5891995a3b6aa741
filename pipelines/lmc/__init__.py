"""Linear mode connectivity (paper Section 5.1, Table 1, Figure 3) on a zoo with replicates.

A pair is two trained replicates of one member index (same hyperparameters, other seeds: the
zoo's `replicates` >= 2). For each pair, L(alpha) is the plain (un-smoothed) cross-entropy on the
zoo recipe's test images, un-augmented, fp32, at theta(alpha) = (1 - alpha) theta_a + alpha theta_b
for `alphas` evenly spaced alpha (odd, so 1/2 is on the grid). The curve is the MLI package's
computation with theta_0 := theta_a and theta_T := theta_b, so its evaluator computes it.

Rows (variants), the paper's Table 1 columns: standard; standard with theta_b aligned to theta_a
by weight matching (zoo.align, Git Re-Basin; its seconds per pair are recorded); sigma-Asym;
W-Asym. Only trainable entries are interpolated; a family's fixed pieces are the zoo's, shared.

Table 1: the midpoint barrier L(1/2 theta_a + 1/2 theta_b) - 1/2 (L(theta_a) + L(theta_b)),
mean and sample std (ddof=1) over pairs; each variant gets a two-sided Student t-test against
standard. Pairs with a diverged member get a row without a curve, so they are counted.

Where things go: `out` (default `<zoo>/lmc`) holds
    variant=<v>/part-<first member a>.parquet   curves, one file per evaluated chunk of pairs
    table1.md, table1.csv, table1.tex, figure3.png, manifest.json (the measurement)
Resume: pairs with a row are skipped; a rerun with other measurement settings into the same
`out` is refused.
"""
from .config import LmcConfig
from .curves import CURVE_SCHEMA, pending, read_curves, write_curves
from .figure import plot_figure3
from .pairs import ALIGNED, VARIANTS, aligned_to, plan_pairs, replicates_of, variants
from .stage import CLAIM, describe, run, eval_images
from .table import (PAPER_ABOUT, PAPER_RESNET_ROW, TABLE_COLUMNS, VARIANT_LABELS, barriers, pair_barriers,
                    read_table1, sections, table1, write_tables)

__all__ = [
    "ALIGNED", "CLAIM", "CURVE_SCHEMA", "LmcConfig", "PAPER_ABOUT", "PAPER_RESNET_ROW", "TABLE_COLUMNS", "VARIANTS",
    "VARIANT_LABELS", "aligned_to", "barriers", "describe", "pair_barriers", "pending", "plan_pairs", "plot_figure3",
    "read_curves", "read_table1", "replicates_of", "run", "sections", "table1", "eval_images", "variants",
    "write_curves", "write_tables",
]
