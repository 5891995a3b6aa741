"""`symzoo store verify|info|upgrade ZOO`: check a zoo's files and move bad ones aside, describe it, or
rewrite a schema v1 zoo as v2 in place (resumable)."""
from __future__ import annotations

import json

from zoo import store


def register(sub) -> None:
    p = sub.add_parser("store", help="verify a zoo's files (moving bad ones aside), describe the zoo, or "
                                     "upgrade a schema v1 zoo to v2 in place")
    p.add_argument("action", choices=["verify", "info", "upgrade"])
    p.add_argument("zoo", metavar="ZOO", help="zoo folder, or a URI such as file://, s3://, gs://")
    p.add_argument("--dry-run", action="store_true", help="verify: report only; move and delete nothing")
    p.add_argument("--shallow", action="store_true",
                   help="verify: check footers, schemas and small columns only, not every page's checksum")
    p.add_argument("--stale-temp-hours", type=float, default=1.0, metavar="H",
                   help="verify: delete hidden temporary files older than this (crashed commits); default 1")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def describe(zoo: store.Zoo) -> dict:
    """What a zoo holds: its settings and, per family, files and members by status."""
    m = zoo.manifest
    counts = zoo.members(columns=["family", "status"]).value_counts().to_dict()
    families = {f: {"asym_seed": e["asym_seed"], "n_params": e["n_params"], "files": len(zoo.files(f)),
                    "members": {s: int(n) for (fam, s), n in sorted(counts.items()) if fam == f}}
                for f, e in m["families"].items()}
    return {"zoo": zoo.path, "schema_version": m["schema_version"], "zoo_seed": m["zoo_seed"],
            "created_utc": m.get("created_utc"), "code_version": m.get("code_version"),
            "data": {k: m["data"].get(k) for k in ("name", "sha256")},
            "recipe_overrides": m.get("recipe_overrides"), "families": families}


def _info_text(info: dict) -> str:
    lines = [f"{k}: {v}" for k, v in info.items() if k != "families"]
    for f, e in info["families"].items():
        members = ", ".join(f"{n} {s}" for s, n in e["members"].items()) or "no members"
        lines.append(f"family {f}: asym_seed {e['asym_seed']}, P = {e['n_params']}, {e['files']} files, {members}")
    return "\n".join(lines)


def run(args) -> int:
    """verify exits 1 when it found bad files (moved aside unless --dry-run), else 0; upgrade exits 1
    when it left files unconverted (unreadable: verify moves them aside, then rerun), else 0."""
    if args.action == "upgrade":
        report = store.upgrade(args.zoo)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
        return 1 if report.left else 0
    if args.action == "info":
        info = describe(store.open_zoo(args.zoo))
        print(json.dumps(info, indent=2) if args.json else _info_text(info))
        return 0
    if args.stale_temp_hours < 0:
        raise ValueError(f"--stale-temp-hours={args.stale_temp_hours}: must be >= 0")
    report = store.verify(args.zoo, move=not args.dry_run, deep=not args.shallow,
                          stale_temp_s=args.stale_temp_hours * 3600)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.clean else 1
