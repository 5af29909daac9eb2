"""`python -m tfrecords_builder {build,plan,synth,inspect,bench}`."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from . import archive, build, records, subsets
from .nomenclature import Partition


def _add_source_flags(p: argparse.ArgumentParser) -> None:
    v1 = p.add_argument_group("BigEarthNet v1.0 (folders + JSON)")
    v1.add_argument("--s2-root", help="BigEarthNet-v1.0/ folder (one folder per S2 patch)")
    v1.add_argument("--s1-root", help="BigEarthNet-S1-v1.0/ folder (one folder per S1 patch)")
    for split in ("train", "val", "test"):
        v1.add_argument(f"--{split}", help=f"{split} list: S2 names, or S2,S1 pairs; CRLF or LF")
    v1.add_argument("--cloudy-list", help="patches with clouds and shadows (one or two columns)")
    v1.add_argument("--snow-list", help="patches with seasonal snow (one or two columns)")
    v2 = p.add_argument_group("BigEarthNet v2.0 / reBEN (parquet)")
    v2.add_argument("--root", help="folder holding BigEarthNet-S2/ and BigEarthNet-S1/ (not needed by plan)")
    v2.add_argument("--metadata", help="metadata.parquet")
    v2.add_argument("--extra-metadata", help="metadata_for_patches_with_snow_cloud_or_shadow.parquet (cloudy and snow subsets)")
    both = p.add_argument_group("both layouts")
    both.add_argument("--very-cloudy-list", help="S2,S1 pairs of fully clouded patches (e.g. the seed authors' hand-picked list)")
    both.add_argument("--in-distribution", default="2-13", help="19-class indices in distribution (default 2-13)")
    both.add_argument("--ood-train", default="0,1", help="indices of OOD classes for training the detectors (default 0,1)")
    both.add_argument("--ood-test", default="14-18", help="indices of OOD classes for testing (default 14-18)")
    both.add_argument("--seed", type=int, default=0, help="seed of the record order within each subset (default 0)")
    both.add_argument("--workers", type=int, default=1, help="processes reading metadata and images (default 1)")
    out = p.add_argument_group("output (build)")
    out.add_argument("--out", help="output folder for shards, manifest.json and rejected.csv")
    out.add_argument("--shard-size-mb", type=float, default=100, help="target shard size in MB (default 100)")
    out.add_argument("--compression", choices=["gzip"], default=None, help="GZIP-compress shards")
    out.add_argument("--skip-bad", action="store_true", help="set bad pairs aside in rejected.csv instead of stopping")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def make_plan(args, need_images: bool) -> build.Plan:
    """Read the metadata named by the flags and assign subsets."""
    partition = Partition.parse(args.in_distribution, args.ood_train, args.ood_test)
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    v1_flags = [args.s2_root, args.s1_root, args.train, args.val, args.test, args.cloudy_list, args.snow_list]
    if args.metadata:
        if any(v1_flags):
            raise ValueError("give either the v1 flags (--s2-root ...) or the v2 flags (--metadata ...), not both")
        if need_images and not args.root:
            raise ValueError("--root is required to build a v2 archive")
        source = {"layout": "v2", "root": _abs(args.root), "metadata": _abs(args.metadata),
                  "extra_metadata": _abs(args.extra_metadata), "very_cloudy_list": _abs(args.very_cloudy_list)}
        candidates, rejections = archive.read_v2(args.root, args.metadata, args.extra_metadata, args.very_cloudy_list)
    elif args.s2_root or args.s1_root:
        missing = [f for f, v in (("--s2-root", args.s2_root), ("--s1-root", args.s1_root), ("--train", args.train),
                                  ("--val", args.val), ("--test", args.test)) if not v]
        if missing:
            raise ValueError(f"a v1 archive needs {' '.join(missing)}")
        lists = {"train": args.train, "val": args.val, "test": args.test, "cloudy": args.cloudy_list,
                 "snow": args.snow_list, "very_cloudy": args.very_cloudy_list}
        source = {"layout": "v1", "s2_root": _abs(args.s2_root), "s1_root": _abs(args.s1_root),
                  **{f"{k}_list": _abs(v) for k, v in lists.items()}}
        candidates, rejections = archive.read_v1(args.s2_root, args.s1_root, lists, args.workers)
    else:
        raise ValueError("no archive given: use --s2-root/--s1-root/--train/--val/--test (v1) or --metadata (v2)")
    assigned, dropped = subsets.assign(candidates, partition, args.seed)
    return build.Plan(source, partition, args.seed, assigned, dropped, rejections)


def _abs(path):
    return os.path.abspath(path) if path else None


def cmd_plan(args) -> int:
    plan = make_plan(args, need_images=False)
    summary = plan.summary()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        _print_counts(summary["subsets"], summary["dropped"], summary["rejected"])
        for r in plan.rejections[:10]:
            print(f"  rejected: {r.message()}")
    return 0


def cmd_build(args) -> int:
    if not args.out:
        raise ValueError("--out is required")
    plan = make_plan(args, need_images=True)
    command = "python -m tfrecords_builder " + " ".join(shlex.quote(a) for a in args.argv)
    manifest = build.build(plan, args.out, shard_size_mb=args.shard_size_mb, compression=args.compression,
                           skip_bad=args.skip_bad, workers=args.workers, command=command, progress=not args.quiet)
    _print_counts(manifest["subsets"], manifest["dropped"], manifest["rejected"]["by_reason"])
    print(f"wrote {os.path.join(args.out, records.MANIFEST)}")
    return 0


def _print_counts(subset_counts, dropped, rejected) -> None:
    for name, entry in subset_counts.items():
        print(f"{name:>12}: {entry['count']}")
    for title, counts in (("dropped", dropped), ("rejected", rejected)):
        if counts:
            print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def cmd_inspect(args) -> int:
    from .inspect import inspect

    return inspect(args.dir, verify_shards=not args.no_verify, as_json=args.json)


def cmd_synth(args) -> int:
    from .synth import write_archive

    info = write_archive(args.out, args.layout, args.pairs, args.seed, workers=args.workers, progress=not args.quiet)
    print(f"wrote a synthetic {info['layout']} archive of {args.pairs} pairs to {args.out} (see {os.path.join(args.out, 'synth.json')})")
    return 0


def cmd_demo(args) -> int:
    """Synthetic v1 archive → build → inspect, in one folder; re-running resumes or reuses it."""
    from .synth import ensure_build

    out = ensure_build(args.dir, "v1", args.pairs, args.seed, workers=args.workers)
    return cmd_inspect(argparse.Namespace(dir=out, no_verify=False, json=False))


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfrecords_builder", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="archive → sharded TFRecords + manifest.json")
    _add_source_flags(b)
    b.set_defaults(func=cmd_build)
    pl = sub.add_parser("plan", help="subset and drop counts from metadata and lists alone (no GeoTIFF is read)")
    _add_source_flags(pl)
    pl.add_argument("--json", action="store_true", help="print JSON in the manifest's 'subsets' shape")
    pl.set_defaults(func=cmd_plan)
    s = sub.add_parser("synth", help="write a synthetic archive in the real v1 or v2 layout")
    s.add_argument("--out", required=True)
    s.add_argument("--layout", choices=["v1", "v2"], default="v1")
    s.add_argument("--pairs", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_synth)
    i = sub.add_parser("inspect", help="manifest summary and checksum verification")
    i.add_argument("dir")
    i.add_argument("--no-verify", action="store_true", help="skip sha256 and CRC verification of the shards")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)
    d = sub.add_parser("demo", help="synthesize a v1 archive, build it and inspect the result")
    d.add_argument("--dir", default="demo_out", help="work folder (default demo_out)")
    d.add_argument("--pairs", type=int, default=400)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=2)
    d.set_defaults(func=cmd_demo)
    be = sub.add_parser("bench", help="build time per pair vs a bare rasterio read; --workers 2 speed-up")
    be.add_argument("--pairs", type=int, default=1500)
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--dir", help="work folder (default: a temporary one)")
    be.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, build.BuildError, archive.MetadataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
