"""Load a zoo three ways, look at its weights per tensor, and train your own metanetwork on it.

    python examples/custom_metanet.py runs/demo/zoo [--family w_asym] [--epochs 30]

The custom metanetwork here, `NormNet`, predicts test accuracy from the L2 norm of every
parameter tensor: a permutation-invariant feature set of 29 numbers. It plugs into symzoo's
metanetwork training loop by subclassing `metanets.Metanet` and registering a `MetanetSpec` (in
the package, that record sits at the end of the metanetwork's file, and `metanets/registry.py`
lists it; here `metanets.register` adds it at run time).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import metanets
import zoo


HIDDEN = 64


class NormNet(metanets.Metanet):
    """Per-tensor L2 norms -> MLP. Invariant to hidden-channel permutations, like StatNN."""

    def __init__(self, layout, *, hidden: int = HIDDEN):
        super().__init__(layout)
        sizes = [t.size for t in self.layout.tensors if t.size > 0]  # W-Asym's stem is all fixed
        self.head = nn.Sequential(nn.Linear(len(sizes), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def featurize(self, x: torch.Tensor) -> torch.Tensor:
        x = super().featurize(x)
        parts = self.layout.split(x)  # {tensor name: [B, size]}
        return torch.stack([p.norm(dim=1) for t, p in zip(self.layout.tensors, parts.values()) if t.size > 0], 1)


SPEC = metanets.MetanetSpec(name="normnet", display="NormNet", build=NormNet, options={"hidden": HIDDEN},
                            invariant=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("zoo")
    ap.add_argument("--family", default="standard")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    store = zoo.open_zoo(args.zoo)

    # 1. pandas: one row per member, no weights unless asked for
    members = store.members(family=args.family, where="status == 'ok'")
    print(members[["member_id", "index", "lr", "weight_decay", "test_acc"]].describe().T, "\n")

    # 2. DuckDB over the same Parquet files (optional dependency)
    try:
        import duckdb

        glob = f"{args.zoo}/members/*/*.parquet"
        print(duckdb.sql(f"select family, count(*) n, avg(test_acc) acc from read_parquet('{glob}', "
                         "hive_partitioning=true) group by family order by family").df(), "\n")
    except ImportError:
        print("(pip install duckdb to query the zoo with SQL)\n")

    # 3. symzoo: [n, P] weights and a per-tensor view through the family's layout
    weights, ids = store.weights(args.family, which="final")
    layout = metanets.as_layout(store.layout(args.family))
    per_tensor = layout.split(weights)
    print(f"{args.family}: weights {weights.shape}, {len(layout.tensors)} tensors; "
          f"head.weight of member 0 has {per_tensor['head.weight'][0].size} trainable entries\n")

    # 4. your own metanetwork, trained by the paper's protocol loop (AdamW, MSE, best-val epoch)
    metanets.register(SPEC)
    targets = members.set_index("member_id").loc[ids, "test_acc"].to_numpy()
    data = metanets.prepare(weights, targets, ids, layout, family=args.family)
    feats = metanets.featurize_all(metanets.build("normnet", layout), data.x, torch.device("cpu"))
    settings = metanets.TrainSettings(epochs=args.epochs, batch_size=32)
    record = metanets.train_run("normnet", data, feats, lr=1e-3, seed=0, settings=settings)
    print(f"NormNet on {args.family}: test R^2 {record['test_r2']:.3f}, Kendall tau {record['test_tau']:.3f} "
          f"(best-val epoch {record['best_epoch']}, split {record['splits']})")


if __name__ == "__main__":
    main()
