"""`python -m tf_fusion.map --model MODEL --s2 S2 --s1 S1 --out OUT_DIR`: a whole scene in, class and
reliability maps out (the command; the work is `tf_fusion.scene_map`'s, whose docstring says what
goes in and comes out, and, with `--runner`, `tf_fusion.map_beam`'s).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from . import cli
from .runs import using
from .scene_map import (SUMMARY, WINDOW, Job, MapModel, map_scene, open_scene, parse_bounds,
                        read_scenes)


# ------------------------------------------------------------------------------ the command
def parse_args(argv=None):
    p = cli.parser("tf_fusion.map", "Map a whole Sentinel-2 L2A / Sentinel-1 scene with an exported SavedModel: "
                   "class probabilities, labels, p_optical, p_sar and entropy per 120 px window, as a COG.",
                   "python -m tf_fusion.map --model models/fusion --s2 S2A_MSIL2A_...SAFE --s1 s1_scene --out maps/scene",
                   "python -m tf_fusion.map --model models/fusion --scenes scenes.csv --out maps")
    p.add_argument("--model", required=True, help="an exported model: MODEL_BASE/VERSION, or MODEL_BASE (newest version)")
    p.add_argument("--s2", help="a Sentinel-2 L2A .SAFE folder, a folder of per-band files (B02.tif, *_B02.tif) or "
                                "a multi-band GeoTIFF with band descriptions")
    p.add_argument("--s1", help="a folder with VV and VH GeoTIFFs (dB; any CRS, reprojected onto the S2 10 m grid)")
    p.add_argument("--scenes", help="CSV of s2,s1,name rows: map each scene into OUT/NAME")
    p.add_argument("--out", required=True, help="output folder (a rerun of the same command resumes it)")
    p.add_argument("--stride", type=int, default=WINDOW, help=f"px between windows, a multiple of 6 (default {WINDOW})")
    p.add_argument("--bounds", help="MINX,MINY,MAXX,MAXY: map only the windows that touch this box")
    p.add_argument("--bounds-crs", help="CRS of --bounds, e.g. EPSG:4326 (default: the S2 grid's)")
    p.add_argument("--batch", type=int, default=32, help="windows per model call (default 32)")
    p.add_argument("--block", type=int, default=8, help="a block, the unit of commit, is BLOCK x BLOCK windows (default 8)")
    p.add_argument("--s1-linear", action="store_true", help="the S1 files hold linear power, not dB")
    p.add_argument("--skip-bad", action="store_true", help="a block that cannot be read becomes nodata (listed at the end)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--runner", choices=("direct", "dataflow", "flink", "spark"),
                   help="run the per-window code as an Apache Beam pipeline on this runner (the `scale` extra); "
                        "further --flags go to Beam's pipeline options (e.g. --project, --region, --temp_location)")
    args, beam_args = p.parse_known_args(argv)
    if beam_args and not args.runner:
        p.error(f"unrecognized arguments: {' '.join(beam_args)}")
    args.beam_args = beam_args
    if args.scenes and (args.s2 or args.s1):
        p.error("give --scenes or --s2/--s1, not both")
    if not args.scenes and not (args.s2 or args.s1):
        p.error("give --s2, --s1 (or both), or --scenes")
    if args.batch < 1 or args.block < 1:
        p.error("--batch and --block must be positive")
    if args.bounds_crs and not args.bounds:
        p.error("--bounds-crs needs --bounds")
    return args


def run(args, log=print, after_block=None) -> list[str]:
    """Map every scene of the command; returns the bad blocks skipped (--skip-bad)."""
    bounds = parse_bounds(args.bounds) if args.bounds else None
    if args.scenes:
        scenes = [(s2, s1, os.path.join(args.out, name)) for s2, s1, name in read_scenes(args.scenes)]
    else:
        scenes = [(args.s2, args.s1, args.out)]
    jobs = [Job(s2, s1, out, stride=args.stride, bounds=bounds, bounds_crs=args.bounds_crs, batch=args.batch,
                block=args.block, s1_linear=args.s1_linear, skip_bad=args.skip_bad) for s2, s1, out in scenes]
    for job in jobs:  # every scene's inputs checked before the model loads (seconds) or a scene is mapped
        open_scene(job).close()
    if getattr(args, "runner", None):
        from . import map_beam

        with contextlib.ExitStack() as stack:
            for job in jobs:
                stack.enter_context(using(job.out, log))
            map_beam.run(jobs, args.model, args.runner, args.beam_args, log=log)
        return [b for job in jobs for b in _summary(job.out)["bad_blocks"]]
    model = MapModel(args.model)
    bad = []
    for job in jobs:
        out = job.out
        t = time.perf_counter()
        summary = map_scene(job, model, progress=not args.quiet, log=log, after_block=after_block)
        log(f"{out}: {summary['windows_processed']} of {summary['windows']} windows mapped "
            f"({summary['grid'][0]} x {summary['grid'][1]}) in {time.perf_counter() - t:.1f} s; "
            f"optical OOD {summary['optical_ood_share']}, SAR OOD {summary['sar_ood_share']}")
        bad += summary["bad_blocks"]
    return bad


def _summary(out: str) -> dict:
    with open(os.path.join(out, SUMMARY), encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    args = parse_args(argv)
    bad = []

    def action():
        bad.extend(run(args))

    code = cli.run(action)
    if code == 0 and bad:
        print(f"{len(bad)} block(s) could not be read and are nodata:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
