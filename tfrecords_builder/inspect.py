"""`inspect DIR`: what a build holds, and whether its shards are intact (sha256 + record CRCs)."""
from __future__ import annotations

import hashlib
import json
import os

from . import records, tfrecord


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(out_dir: str, manifest: dict) -> list[str]:
    """One line per problem: missing shard, checksum mismatch, record count mismatch, bad CRC."""
    problems = []
    for subset, entry in manifest["subsets"].items():
        for shard in entry["shards"]:
            path = os.path.join(out_dir, shard["file"])
            if not os.path.exists(path):
                problems.append(f"{shard['file']}: missing")
                continue
            if _sha256(path) != shard["sha256"]:
                problems.append(f"{shard['file']}: sha256 mismatch (file changed or corrupt)")
                continue
            try:
                n = sum(1 for _ in tfrecord.read_records(path, manifest.get("compression")))
            except (ValueError, OSError, EOFError) as e:
                problems.append(f"{shard['file']}: {e}")
                continue
            if n != shard["records"]:
                problems.append(f"{shard['file']}: {n} records, manifest says {shard['records']}")
    return problems


def inspect(out_dir: str, verify_shards: bool = True, as_json: bool = False) -> int:
    manifest = records.load_manifest(out_dir)
    problems = verify(out_dir, manifest) if verify_shards else None
    if as_json:
        summary = {k: manifest[k] for k in ("schema_version", "partition", "dropped", "rejected", "band_stats", "source")}
        summary["subsets"] = {k: {"count": v["count"], "shards": len(v["shards"])} for k, v in manifest["subsets"].items()}
        summary["problems"] = problems
        print(json.dumps(summary, indent=1))
    else:
        total = sum(s["bytes"] for e in manifest["subsets"].values() for s in e["shards"])
        print(f"{out_dir}: schema {manifest['schema_version']}, {manifest['source']['layout']} archive, "
              f"{total / 1e6:.1f} MB, compression {manifest['compression'] or 'none'}")
        part = manifest["partition"]
        print(f"partition: in-distribution {part['in_distribution']}, ood_train {part['ood_train']}, ood_test {part['ood_test']}")
        for name, entry in manifest["subsets"].items():
            print(f"{name:>12}: {entry['count']:>8} records in {len(entry['shards'])} shards")
        if manifest["dropped"]:
            print("dropped: " + ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items()))
        if manifest["rejected"]["count"]:
            print(f"rejected: {manifest['rejected']['count']} (see {manifest['rejected']['file']}): "
                  + ", ".join(f"{k} {v}" for k, v in manifest["rejected"]["by_reason"].items()))
        print("band stats (train): " + ", ".join(f"{b} {s['mean']:.2f}±{s['std']:.2f}" for b, s in manifest["band_stats"].items()))
        if problems is not None:
            print("verified: all shards intact" if not problems else f"{len(problems)} problems:")
            for line in problems:
                print(f"  {line}")
    return 1 if problems else 0
