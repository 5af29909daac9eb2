"""`python -m tfrecords_builder {build,plan,synth,synth-scene,inspect,demo,bench}`: flags in, one line out on error.

The commands only map flags to the Python API (`plan.Source`, `plan.make_plan`, `build.build`,
`synth`, `inspect`) and print what it returns; every error is one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from . import build
from .nomenclature import DEFAULT_PARTITION, Partition, format_index_set
from .plan import FLAGS, Holdout, Source, make_plan

_PARTITION_FLAGS = {name: format_index_set(getattr(DEFAULT_PARTITION, name))
                    for name in ("in_distribution", "ood_train", "ood_test")}


def _add_source_flags(p: argparse.ArgumentParser) -> None:
    v1 = p.add_argument_group("BigEarthNet v1.0 (folders + JSON)")
    v1.add_argument("--s2-root", help="BigEarthNet-v1.0/ folder (one folder per S2 patch)")
    v1.add_argument("--s1-root", help="BigEarthNet-S1-v1.0/ folder (one folder per S1 patch)")
    for split in ("train", "val", "test"):
        v1.add_argument(f"--{split}", help=f"{split} list: S2 names, or S2,S1 pairs; CRLF or LF")
    v1.add_argument("--cloudy-list", help="patches with clouds and shadows (one or two columns)")
    v1.add_argument("--snow-list", help="patches with seasonal snow (one or two columns)")
    v1.add_argument("--country-map", nargs="+", metavar="PARQUET",
                    help="with --holdout-countries: reBEN parquet files giving each v1 patch its country "
                         "(s2v1_name → country), e.g. metadata.parquet and the snow/cloud one")
    v2 = p.add_argument_group("BigEarthNet v2.0 / reBEN (parquet)")
    v2.add_argument("--root", help="folder holding BigEarthNet-S2/ and BigEarthNet-S1/ (not needed by plan)")
    v2.add_argument("--metadata", help="metadata.parquet")
    v2.add_argument("--extra-metadata", help="metadata_for_patches_with_snow_cloud_or_shadow.parquet (cloudy and snow subsets)")
    both = p.add_argument_group("both layouts")
    both.add_argument("--very-cloudy-list", help="S2,S1 pairs of fully clouded patches (e.g. the seed authors' hand-picked list)")
    for name, help_text in (("in_distribution", "19-class indices in distribution"),
                            ("ood_train", "indices of OOD classes for training the detectors"),
                            ("ood_test", "indices of OOD classes for testing")):
        default = _PARTITION_FLAGS[name]
        both.add_argument("--" + name.replace("_", "-"), default=default, help=f"{help_text} (default {default})")
    both.add_argument("--holdout-countries", metavar="NAME[,NAME...]",
                      help="region shift: these countries' patches form only the region_shift and "
                           "region_shift_ood subsets (v2: the country column; v1: --country-map)")
    both.add_argument("--seed", type=int, default=0, help="seed of the record order within each subset (default 0)")
    both.add_argument("--workers", type=int, default=1, help="processes reading metadata and images (default 1)")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder for shards, manifest.json and rejected.csv")
    out.add_argument("--shard-size-mb", type=float, default=100, help="target shard size in MB (default 100)")
    out.add_argument("--compression", choices=["gzip"], default=None, help="GZIP-compress shards")
    out.add_argument("--skip-bad", action="store_true", help="set bad pairs aside in rejected.csv instead of stopping")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def source_of(args) -> Source:
    """The archive the flags describe (v2 when --metadata is given, v1 when a v1 root is)."""
    paths = {field: getattr(args, field) for field in FLAGS}
    if args.metadata:
        return Source("v2", **paths)
    if args.s2_root or args.s1_root:
        return Source("v1", **paths)
    raise ValueError("no archive given: use --s2-root/--s1-root/--train/--val/--test (v1) or --metadata (v2)")


def _plan(args, need_images: bool):
    partition = Partition.parse(args.in_distribution, args.ood_train, args.ood_test)
    if args.country_map and not args.holdout_countries:
        raise ValueError("--country-map is only used with --holdout-countries")
    holdout = Holdout.parse(args.holdout_countries, args.country_map) if args.holdout_countries else None
    return make_plan(source_of(args), partition, args.seed, args.workers, need_images, holdout)


def cmd_plan(args) -> int:
    plan = _plan(args, need_images=False)
    summary = plan.summary()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        _print_counts(summary["subsets"], summary["dropped"], summary["rejected"], summary.get("holdout"))
        for r in plan.rejections[:10]:
            print(f"  rejected: {r.message()}")
    return 0


def cmd_build(args) -> int:
    plan = _plan(args, need_images=True)
    command = "python -m tfrecords_builder " + " ".join(shlex.quote(a) for a in args.argv)
    m = build.build(plan, args.out, shard_size_mb=args.shard_size_mb, compression=args.compression,
                    skip_bad=args.skip_bad, workers=args.workers, command=command, progress=not args.quiet)
    _print_counts(m["subsets"], m["dropped"], m["rejected"]["by_reason"], m.get("holdout"))
    print(f"wrote {m.path}")
    return 0


def _print_counts(subset_counts, dropped, rejected, holdout=None) -> None:
    for name, entry in subset_counts.items():
        print(f"{name:>16}: {entry['count']}")
    for title, counts in (("dropped", dropped), ("rejected", rejected)):
        if counts:
            print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if holdout:
        print(f"held out: {', '.join(holdout['countries'])}")
        for name in ("region_shift", "region_shift_ood"):
            print(f"  {name}: " + (", ".join(f"{k} {v}" for k, v in holdout[name].items()) or "none"))


def cmd_inspect(args) -> int:
    from .inspect import inspect

    return inspect(args.dir, verify_shards=not args.no_verify, as_json=args.json)


def cmd_synth(args) -> int:
    from .synth import write_archive

    write_archive(args.out, args.layout, args.pairs, args.seed, workers=args.workers, progress=not args.quiet,
                  regions=args.regions, world=args.world)
    print(f"wrote a synthetic {args.layout} archive of {args.pairs} pairs to {args.out} "
          f"(see {os.path.join(args.out, 'synth.json')})")
    return 0


def cmd_synth_scene(args) -> int:
    from .synth.scene_writer import write_scene

    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        raise ValueError(f"output {args.out!r} already exists and is not an empty directory")
    info = write_scene(args.out, args.size, args.seed, epsg=args.epsg, clouds=not args.no_clouds,
                       s1_crs=None if args.s1_crs == "same" else args.s1_crs, safe=args.safe)
    n = args.size // info["window"]
    print(f"wrote a synthetic {args.size} x {args.size} px scene ({n} x {n} windows) to {args.out}: "
          f"s2/ (EPSG:{args.epsg}), s1/ ({args.s1_crs})" + (f", {info['safe']}" if info["safe"] else "")
          + f" (see {os.path.join(args.out, 'scene.json')})")
    return 0


def cmd_demo(args) -> int:
    from .inspect import inspect
    from .synth import ensure_synthetic_build

    out = ensure_synthetic_build(args.dir, "v1", args.pairs, args.seed, workers=args.workers, world=args.world)
    return inspect(out)


def cmd_bench(args) -> int:
    from .bench import run

    return run(args.pairs, args.seed, args.dir)


_EXAMPLES = {
    "build": "Convert an archive into sharded TFRecords, manifest.json and rejected.csv; rerun the same "
             "command to resume.\n\nexample:\n  python -m tfrecords_builder build --root reBEN --metadata metadata.parquet "
             "--out reben-tfrecords --workers 2",
    "plan": "Print the subset, drop and rejection counts of an archive from its metadata alone (no GeoTIFF "
            "is read).\n\nexample:\n  python -m tfrecords_builder plan --metadata metadata.parquet "
            "--extra-metadata metadata_for_patches_with_snow_cloud_or_shadow.parquet --holdout-countries Serbia,Portugal",
    "synth": "Write a synthetic archive in the exact real v1 or v2 layout, for tests and demos.\n\n"
             "example:\n  python -m tfrecords_builder synth --out synthetic-v2 --layout v2 --pairs 400",
    "synth-scene": "Write a synthetic Sentinel-2 L2A / Sentinel-1 scene (per-band GeoTIFFs in UTM, S1 in another "
                   "CRS, optionally the same S2 scene as a .SAFE with JP2 bands and BOA_ADD_OFFSET), for "
                   "tf_fusion.map.\n\nexample:\n  python -m tfrecords_builder synth-scene --out scene --size 1200 --safe",
    "inspect": "Summarise a build and verify every shard (sha256, record CRCs, record counts); exit 1 when "
               "a shard is damaged.\n\nexample:\n  python -m tfrecords_builder inspect reben-tfrecords",
    "demo": "Write a synthetic v1 archive, build it and inspect the result, in a cache folder; rerunning "
            "reuses or resumes it.\n\nexample:\n  python -m tfrecords_builder demo --dir demo_out",
    "bench": "Measure the build time per pair against a bare rasterio read, and the --workers 2 speed-up.\n\n"
             "example:\n  python -m tfrecords_builder bench --pairs 1500",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfrecords_builder",
                                description="BigEarthNet-MM (v1 folders + JSON, v2 parquet) → sharded TFRecords + manifest.json.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, summary, func):
        c = sub.add_parser(name, help=summary, description=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func)
        return c

    b = command("build", "archive → sharded TFRecords + manifest.json", cmd_build)
    _add_source_flags(b)
    _add_output_flags(b)
    pl = command("plan", "subset and drop counts from metadata and lists alone (no GeoTIFF is read)", cmd_plan)
    _add_source_flags(pl)
    pl.add_argument("--json", action="store_true", help="print JSON in the manifest's 'subsets' shape")
    s = command("synth", "write a synthetic archive in the real v1 or v2 layout", cmd_synth)
    s.add_argument("--out", required=True, help="new or empty folder for the archive")
    s.add_argument("--layout", choices=["v1", "v2"], default="v1", help="archive layout (default v1)")
    s.add_argument("--pairs", type=int, default=200, help="number of S2/S1 pairs, at least 20 (default 200)")
    s.add_argument("--seed", type=int, default=0, help="seed of everything in the archive (default 0)")
    s.add_argument("--workers", type=int, default=1, help="processes writing pairs (default 1)")
    s.add_argument("--regions", type=int, default=0,
                   help="N >= 2: scenes in N countries whose signatures differ (phenology, soil brightness and "
                        "moisture, SAR backscatter); v1 archives get a reBEN-schema country map (default 0: none)")
    s.add_argument("--world", type=int, default=0,
                   help="N >= 1: another synthetic world, drawn from N: class signatures, cloud model (N = 1, 2, 3, "
                        "...: opaque, haze, shadowed, ...) and brightness, SAR speckle and offsets (default 0: the "
                        "generator's own, as it always was)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    sc = command("synth-scene", "write a synthetic S2/S1 scene (UTM S2, S1 in EPSG:4326, optional .SAFE)",
                 cmd_synth_scene)
    sc.add_argument("--out", required=True, help="new or empty folder for the scene")
    sc.add_argument("--size", type=int, default=600, help="scene width and height in 10 m px, a multiple of 120 (default 600)")
    sc.add_argument("--seed", type=int, default=0, help="seed of everything in the scene (default 0)")
    sc.add_argument("--epsg", type=int, default=32632, help="UTM EPSG code of the S2 grid (default 32632)")
    sc.add_argument("--s1-crs", default="EPSG:4326", help="CRS of the S1 files, or 'same' for the S2 10 m grid "
                                                          "(default EPSG:4326)")
    sc.add_argument("--no-clouds", action="store_true", help="no cloud bank")
    sc.add_argument("--safe", action="store_true", help="also write the S2 scene as an L2A .SAFE (JP2, baseline 04.00)")
    i = command("inspect", "manifest summary and checksum verification", cmd_inspect)
    i.add_argument("dir", help="a build folder (holding manifest.json)")
    i.add_argument("--no-verify", action="store_true", help="skip sha256 and CRC verification of the shards")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    d = command("demo", "synthesize a v1 archive, build it and inspect the result", cmd_demo)
    d.add_argument("--dir", default="demo_out", help="cache folder (default demo_out)")
    d.add_argument("--pairs", type=int, default=400, help="number of pairs (default 400)")
    d.add_argument("--seed", type=int, default=0, help="seed of the archive (default 0)")
    d.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    d.add_argument("--world", type=int, default=0, help="synthetic world (see synth --world; default 0)")
    be = command("bench", "build time per pair vs a bare rasterio read; --workers 2 speed-up", cmd_bench)
    be.add_argument("--pairs", type=int, default=1500, help="pairs of the synthetic archive (default 1500)")
    be.add_argument("--seed", type=int, default=0, help="seed of the archive (default 0)")
    be.add_argument("--dir", help="work folder, kept (default: a temporary one, removed)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, build.BuildError) as e:  # MetadataError and ManifestError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. synth into a read-only folder (build names its own write failures)
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
