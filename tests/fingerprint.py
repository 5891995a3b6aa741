"""sha256 fingerprints of a smoke study's results: the zoo's weights and metrics, Table 3's and
Table 4's values. Recorded once from the code before a refactor; `test_regression` holds them.

Only the public reading API (`zoo.open_zoo`) and the tables' named CSV columns are used, so the
fingerprint survives a new store schema or an added table column, but not a changed number.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

MEMBER_COLUMNS = ["member_id", "index", "lr", "weight_decay", "label_smoothing", "epochs", "epochs_trained", "seed",
                  "status", "diverged_epoch", "train_acc", "train_loss", "train_loss_plain", "test_acc", "test_loss",
                  "test_loss_plain"]
TABLE3_STATS = ["r2_mean", "r2_std", "tau_mean", "tau_std", "lr"]
TABLE4_COLUMNS = ["family", "n", "delta_mean", "delta_std", "monotonic_pct", "local_mean", "local_std",
                  "p_delta", "p_monotonic", "p_local"]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()[:16]


def zoo_fingerprint(path) -> dict[str, str]:
    from zoo import open_zoo

    z = open_zoo(str(path))
    out = {}
    for family in sorted(z.families):
        df = z.members(family=family).sort_values("member_id")
        rows = [tuple(_plain(v) for v in r) for r in df[MEMBER_COLUMNS].itertuples(index=False)]
        weights = []
        for which in ("init", "final"):
            w, ids = z.weights(family, which=which, status=None)
            order = np.argsort(np.asarray(ids))
            weights.append(np.ascontiguousarray(w[order], dtype="<f4").tobytes())
        out[family] = _digest(rows, *weights)
    return out


def table3_fingerprint(csv) -> str:
    df = pd.read_csv(csv).set_index("metanet").sort_index()
    cols = [c for c in df.columns if any(c.endswith("_" + s) for s in TABLE3_STATS)]
    return _digest([(m, c, _plain(df.loc[m, c])) for m in df.index for c in sorted(cols)])


def table4_fingerprint(csv) -> str:
    df = pd.read_csv(csv).set_index("family").sort_index().reset_index()
    return _digest([tuple(_plain(v) for v in r) for r in df[TABLE4_COLUMNS].itertuples(index=False)])


def study_fingerprint(out: Path) -> dict:
    out = Path(out)
    return {"zoo": zoo_fingerprint(out / "zoo"), "table3": table3_fingerprint(out / "metanets" / "table3.csv"),
            "table4": table4_fingerprint(out / "mli" / "table4.csv")}


def _plain(v):
    """One spelling per value: numpy scalars as Python ones, NaN as the string 'nan', floats to 12 digits."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        return "nan" if v != v else float(f"{v:.12g}")
    return v
