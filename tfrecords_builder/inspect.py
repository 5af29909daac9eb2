"""`inspect DIR`: what a build holds, and whether its shards are intact (sha256 + record CRCs)."""
from __future__ import annotations

import json

from .manifest import Manifest, load_manifest, shard_problem


def verify(m: Manifest) -> list[str]:
    """One line per damaged shard (missing, another size or sha256, bad record CRCs, another record
    count), from the same check the readers use (`manifest.shard_problem`); shard paths come from
    `Manifest.shards`, so nothing outside the build is ever read."""
    problems = []
    for shard in m.shards(list(m["subsets"]), empty_ok=True):
        problem = shard_problem(shard, m.compression, "sha256")
        if problem:
            problems.append(f"{shard['file']}: {problem}")
    return problems


def inspect(out_dir: str, verify_shards: bool = True, as_json: bool = False) -> int:
    """Print the summary (and the problems); 0 when intact, 1 when a shard is damaged."""
    m = load_manifest(out_dir)
    problems = verify(m) if verify_shards else None
    if as_json:
        summary = {k: m[k] for k in ("schema_version", "partition", "dropped", "rejected", "band_stats", "source")}
        summary["subsets"] = {k: {"count": v["count"], "shards": len(v["shards"])} for k, v in m["subsets"].items()}
        summary["holdout"] = m.holdout
        summary["problems"] = problems
        print(json.dumps(summary, indent=1))
    else:
        total = sum(s["bytes"] for e in m["subsets"].values() for s in e["shards"])
        print(f"{out_dir}: schema {m['schema_version']}, {m['source']['layout']} archive, "
              f"{total / 1e6:.1f} MB, compression {m.compression or 'none'}")
        part = m["partition"]
        print(f"partition: in-distribution {part['in_distribution']}, ood_train {part['ood_train']}, ood_test {part['ood_test']}")
        if m.holdout:
            print(f"held out (region_shift, region_shift_ood): {', '.join(m.holdout['countries'])}")
        for name, entry in m["subsets"].items():
            print(f"{name:>16}: {entry['count']:>8} records in {len(entry['shards'])} shards")
        if m["dropped"]:
            print("dropped: " + ", ".join(f"{k} {v}" for k, v in m["dropped"].items()))
        if m["rejected"]["count"]:
            print(f"rejected: {m['rejected']['count']} (see {m['rejected']['file']}): "
                  + ", ".join(f"{k} {v}" for k, v in m["rejected"]["by_reason"].items()))
        print("band stats (train): " + ", ".join(f"{b} {s['mean']:.2f}±{s['std']:.2f}" for b, s in m["band_stats"].items()))
        if problems is not None:
            print("verified: all shards intact" if not problems else f"{len(problems)} problems:")
            for line in problems:
                print(f"  {line}")
    return 1 if problems else 0
