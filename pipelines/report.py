"""report.md: the study in one page, every number read from the stage outputs, the paper's
figures beside ours and labelled as the paper's."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metanets.report import paper_table3, table3, to_markdown  # noqa: E402
from zoo.data import data_label  # noqa: E402
from zoo.recipe import Recipe  # noqa: E402
from zoo.records import AT_CHANCE_ACC  # noqa: E402
from zoo.store import open_zoo  # noqa: E402

from . import lmc, mli  # noqa: E402
from .mli.table import PAPER_DIVERGED  # noqa: E402

PAPER_ACCURACY = (  # the paper's figures, labelled as such, and how ours differ in what they measure
    "The paper's (Lim et al. 2024, Sec. 5.3; full CIFAR-10, 10-40 epochs): standard 74.8% train / 73.8% test, "
    "W-Asym 64.0% / 64.0%. Our train accuracy is measured after training on the recipe's whole un-augmented "
    "training set (or its subset), without label smoothing in the accuracy; the companion code measured it on "
    "its augmenting train loader, so the paper's train figure is on augmented images.")
HPARAMS = ("lr", "weight_decay", "label_smoothing", "epochs", "epochs_trained")
NONFINITE_ABOUT = {  # what the zoo table's divergence columns mean under each Recipe.nonfinite
    "skip": "Trained with `nonfinite: skip` (the companion's GradScaler policy): a step whose loss or gradient was "
            "non-finite was skipped for that member, which trained on; *diverged* = final weights non-finite, the "
            "paper's definition.",
    "freeze": "Trained with `nonfinite: freeze`: a member stopped at its first non-finite loss or gradient, so "
              "*diverged* = a non-finite step, and whether its weights would have ended finite (the paper's "
              "definition) is unknown: n/a.",
}


def zoo_table(members: pd.DataFrame, planned: int, nonfinite: str) -> str:
    """One row per family; `nonfinite` is the zoo's Recipe.nonfinite (which sense "diverged" has)."""
    lines = ["| family | planned | committed | ok | diverged | non-finite step (any epoch) | final weights non-finite "
             f"| at chance (test acc < {AT_CHANCE_ACC:.0%}) | test acc mean ± std | median | train acc mean |",
             "|" + "---|" * 11]
    for fam, g in members.groupby("family", sort=False):
        ok, diverged = g[g.status == "ok"], int((g.status == "diverged").sum())
        final = str(diverged) if nonfinite == "skip" else "n/a"
        lines.append(
            f"| {fam} | {planned} | {len(g)} | {len(ok)} | {diverged} | {int(g.diverged_epoch.notna().sum())} | "
            f"{final} | {int((ok.test_acc < AT_CHANCE_ACC).sum())} | "
            f"{100 * ok.test_acc.mean():.1f}% ± {100 * ok.test_acc.std():.1f} | "
            f"{100 * ok.test_acc.median():.1f}% | {100 * ok.train_acc.mean():.1f}% |")
    paper = ", ".join(f"{fam} {n}" for fam, n in PAPER_DIVERGED.items())
    return "\n".join([*lines, "", NONFINITE_ABOUT[nonfinite] + " The paper's (Appendix E.4, its 300 members per "
                       f"family of Table 4; fp16 with a GradScaler, diverged = final weights NaN): {paper}."])


def hparam_table(members: pd.DataFrame) -> str:
    lines = ["| hyperparameter | min | median | max |", "|---|---|---|---|"]
    for h in HPARAMS:
        v = members[h]
        lines.append(f"| {h} | {v.min():.3g} | {v.median():.3g} | {v.max():.3g} |")
    return "\n".join(lines)


def accuracy_histogram(members: pd.DataFrame, path: Path, data: dict | None) -> Path:
    """Test accuracy per family; `data` is the zoo manifest's data identity (named in the title)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bins = np.linspace(0, 1, 41)
    for fam, g in members[members.status == "ok"].groupby("family", sort=False):
        ax.hist(g.test_acc, bins=bins, alpha=0.55, label=f"{fam} (n={len(g)})")
    top = members.loc[members.status == "ok", "test_acc"].max()
    ax.set_xlim(0, min(1.0, (top if np.isfinite(top) else 1.0) + 0.1))
    ax.set(xlabel="test accuracy", ylabel="members")
    ax.set_title(f"Test accuracy of the zoo's members\n{data_label(data, width=100)}", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _timings(out: Path) -> str:
    path = out / "pipeline.json"
    if not path.exists():
        return "(stages run one by one; no pipeline timings)"
    runs = json.loads(path.read_text())["invocations"]
    stages = list(dict.fromkeys(s for r in runs for s in r["stages"]))
    lines = ["| stage | this run | all runs of this command |", "|---|---|---|"]
    for s in stages:
        total = sum(r["stages"].get(s, 0.0) for r in runs)
        lines.append(f"| {s} | {runs[-1]['stages'].get(s, 0.0):.1f} s | {total:.1f} s over {len(runs)} run(s) |")
    return "\n".join(lines)


def _metanet_section(out: Path) -> list[str]:
    runs_path = out / "metanets" / "runs.json"
    if not runs_path.exists():
        return ["(metanetwork stage not run)"]
    ours = table3(json.loads(runs_path.read_text()))
    return ["**Ours:**", "", to_markdown(ours), "**The paper's (Lim et al. 2024, Table 3; 10,000 members per family):**",
            "", to_markdown(paper_table3()), "![predicted vs true accuracy](metanets/scatter.png)"]


def _mli_section(out: Path) -> list[str]:
    table_path = out / "mli" / "table4.csv"
    if not table_path.exists():
        return ["(MLI stage not run)"]
    about = json.loads((out / "mli" / "manifest.json").read_text())["measurement"]
    ours = mli.read_table4(out / "mli")
    return [mli.describe(about, about["alphas"]), "", "**Ours:**", "", mli.markdown_table(ours), "",
            mli.GLOBAL_ABOUT, "", mli.PVALUES_ABOUT, "", mli.markdown_pvalues(ours), "",
            "**The paper's (Lim et al. 2024, Table 4; 300 members per family, p < .001):**", "",
            mli.markdown_table(mli.paper_table4()), "", mli.PAPER_GLOBAL_ABOUT, "", "![Figure 5](mli/figure5.png)"]


def _lmc_section(out: Path) -> list[str]:
    if not (out / "lmc" / "table1.csv").exists():
        return ["(LMC stage not run: it needs a preset with an `lmc` section and a zoo with `replicates` >= 2, "
                "as the gpu and paper presets have)"]
    about = json.loads((out / "lmc" / "manifest.json").read_text())["measurement"]
    return [*lmc.sections(lmc.read_table1(out / "lmc"), lmc.describe(about, about["alphas"])), "",
            "![Figure 3](lmc/figure3.png)"]


def write(out: Path, zoo_path: str, *, preset: str, planned: int, hardware: str) -> Path:
    out = Path(out)
    store = open_zoo(zoo_path)
    man, members = store.manifest, store.members()
    accuracy_histogram(members, out / "zoo_accuracy.png", man.get("data"))
    text = [
        f"# symzoo report: preset `{preset}`", "",
        f"Zoo `{zoo_path}`, zoo seed {man['zoo_seed']}, asym seeds "
        + ", ".join(f"{f} {v['asym_seed']}" for f, v in man["families"].items()) + ".",
        f"{data_label(man.get('data'), prefix='Data: ')}.",
        f"Recipe overrides of the paper's recipe: `{json.dumps(man.get('recipe_overrides', {}))}`"
        + (" (none)" if not man.get("recipe_overrides") else "") + ".",
        f"Hardware: {hardware}. Code: {json.dumps(man.get('code_version'))}.", "",
        "Accuracies, R^2 and convexity below are measured on this zoo, with its n; the paper's figures are "
        "given for comparison and are not ours.", "",
        "## Wall time per stage", "", _timings(out), "",
        "## Zoo", "", zoo_table(members, planned, Recipe.recorded(man["recipe"]).nonfinite), "", PAPER_ACCURACY, "",
        hparam_table(members), "",
        "![test accuracy histogram](zoo_accuracy.png)", "",
        "## Table 3: predicting test accuracy from weights", "", *_metanet_section(out), "",
        "## Table 4: monotonic linear interpolation", "", *_mli_section(out), "",
        "## Table 1: linear mode connectivity between replicates", "", *_lmc_section(out), "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path
