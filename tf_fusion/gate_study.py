"""`python -m tf_fusion.gate_study`: which gate holds in worlds no one tuned it to?

A gate that flags clouds only because the synthetic clouds happen to look like its OOD-training
classes is right by accident. This study trains the experiment's network in several synthetic
worlds (`data.synthetic.world`: other class signatures, cloud models, cloud brightness, SAR
speckle and offsets; `tfrecords_builder.synth.worlds`) and seeds, evaluates every detector from
one pass (`evaluate --detectors all`), and reports per world each detector's AUROC and its
adaptive F1 (samples) on the scenarios the default gate must hold on, beside the run's own gate
(`ood.detector`):

- very cloudy: adaptive ≥ non-adaptive + 0.05 and ≥ optical-only + 0.10;
- optical replaced by N(0, 1): adaptive ≥ non-adaptive + 0.05;
- clear: adaptive within 0.03 of non-adaptive;
- unknown classes (the gate's row): the adaptive entropy rises most.

Runs live in STUDY/runs/world<W>-seed<S>/ and are skipped when finished (a rerun continues a
killed study); STUDY/report/ gets worlds.md and worlds.json. Nothing is fitted or chosen on
these figures by the code: they are what a person reads to choose the default.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import atomic, cli
from . import config as cfg
from .runs import REPORT, Run

STUDY_DIR = "studies"
VERY_CLOUDY, CORRUPTED, CLEAR, UNKNOWN = "very_cloudy", "corrupted_optical", "clear", "ood_classes"
# the criteria of a gate that holds (README, "Which detector gates a modality")
MARGIN_NON_ADAPTIVE, MARGIN_OPTICAL, CLEAR_TOLERANCE = 0.05, 0.10, 0.03


def run_name(world: int, seed: int) -> str:
    return f"world{world}-seed{seed}"


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(values)) if values else None


def gate_rows(results: dict, detectors: dict) -> dict:
    """One run's figures: {row: {column: value}} for non-adaptive, optical-only, each detector
    and the run's gate; columns F1 (samples) on very cloudy, corrupted optical and clear, optical
    AUROC on very cloudy and corrupted optical, AUROC optical / SAR on unknown classes, and
    (gate and fixed methods) the entropy rise on unknown classes over clear."""
    methods = results["methods"]

    def f1(method, scenario):
        return methods.get(method, {}).get(scenario, {}).get("f1_samples")

    def rise(method):
        per = methods.get(method, {})
        if UNKNOWN not in per or CLEAR not in per:
            return None
        return per[UNKNOWN]["avg_entropy"] - per[CLEAR]["avg_entropy"]

    rows = {"non_adaptive": {f"f1_{s}": f1("non_adaptive", s) for s in (VERY_CLOUDY, CORRUPTED, CLEAR)},
            "optical_only": {f"f1_{s}": f1("optical_only", s) for s in (VERY_CLOUDY, CORRUPTED, CLEAR)}}
    for name in ("non_adaptive", "optical_only", "sar_only"):
        rows.setdefault(name, {})["entropy_rise"] = rise(name)
    adaptive = detectors.get("adaptive", {})
    for name in adaptive.get(CLEAR, {}):
        row = {f"f1_{s}": adaptive.get(s, {}).get(name, {}).get("f1_samples") for s in (VERY_CLOUDY, CORRUPTED, CLEAR)}
        for s in (VERY_CLOUDY, CORRUPTED):
            row[f"auroc_{s}"] = detectors.get(s, {}).get(name, {}).get("optical", {}).get("auroc")
        for m in ("optical", "sar"):
            row[f"auroc_{UNKNOWN}_{m}"] = detectors.get(UNKNOWN, {}).get(name, {}).get(m, {}).get("auroc")
        rows[name] = row
    gate = {f"f1_{s}": f1("adaptive", s) for s in (VERY_CLOUDY, CORRUPTED, CLEAR)}
    gate["entropy_rise"] = rise("adaptive")
    rows[f"gate: {results.get('detector', '?')}"] = gate
    return rows


def holds(row: dict, reference: dict) -> dict:
    """Point 1's criteria for one row against the non-adaptive and optical-only rows."""
    na, oo = reference["non_adaptive"], reference["optical_only"]

    def at_least(a, b, margin):
        return None if a is None or b is None else bool(a >= b + margin)

    out = {"very_cloudy": None if row.get("f1_very_cloudy") is None else
           bool(at_least(row["f1_very_cloudy"], na["f1_very_cloudy"], MARGIN_NON_ADAPTIVE)
                and at_least(row["f1_very_cloudy"], oo["f1_very_cloudy"], MARGIN_OPTICAL)),
           "corrupted_optical": at_least(row.get("f1_corrupted_optical"), na["f1_corrupted_optical"], MARGIN_NON_ADAPTIVE),
           "clear": None if row.get("f1_clear") is None or na["f1_clear"] is None else
           bool(abs(row["f1_clear"] - na["f1_clear"]) <= CLEAR_TOLERANCE)}
    if row.get("entropy_rise") is not None:
        others = [reference[m].get("entropy_rise") for m in ("non_adaptive", "optical_only", "sar_only")]
        out["unknown_classes"] = all(o is None or row["entropy_rise"] > o for o in others)
    return out


def aggregate(per_world: dict) -> dict:
    """{world: [rows of each seed]} → {world: {"rows": {row: {column: mean over seeds}}, "holds":
    {row: {criterion: True only when it holds in every seed}}}}."""
    out = {}
    fixed = ("non_adaptive", "optical_only", "sar_only")
    for world, runs in per_world.items():
        names = list(dict.fromkeys(n for rows in runs for n in rows))
        mean = {n: {c: _mean([rows.get(n, {}).get(c) for rows in runs])
                    for c in dict.fromkeys(c for rows in runs for c in rows.get(n, {}))} for n in names}
        each = [{n: holds(r, rows) for n, r in rows.items() if n not in fixed} for rows in runs]
        verdict = {n: {k: _all([h.get(n, {}).get(k) for h in each]) for k in each[0].get(n, {})}
                   for n in names if n not in fixed}
        out[world] = {"rows": mean, "n_seeds": len(runs), "holds": verdict}
    return out


def _all(values):
    """True when every seed's verdict is True, False when one is False, None when one is missing."""
    return False if False in values else None if None in values else True


def _cell(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def render(report: dict) -> str:
    cols = [("f1_very_cloudy", "F1 very cloudy"), ("f1_corrupted_optical", "F1 opt. N(0,1)"), ("f1_clear", "F1 clear"),
            ("auroc_very_cloudy", "AUROC opt. very cloudy"), ("auroc_corrupted_optical", "AUROC opt. N(0,1)"),
            ("auroc_ood_classes_optical", "AUROC unknown opt."), ("auroc_ood_classes_sar", "AUROC unknown SAR"),
            ("entropy_rise", "entropy rise, unknown")]
    marks = {True: "yes", False: "NO", None: "–"}
    lines = ["# The gate in worlds no one tuned it to", "",
             "Per world, mean over seeds; a criterion holds when it holds in every seed. Holds: very cloudy ≥ non-adaptive + 0.05 and ≥ optical-only + 0.10 / "
             "N(0,1) optical ≥ non-adaptive + 0.05 / clear within 0.03 of non-adaptive (/ the gate's entropy rises "
             "most on unknown classes).", ""]
    for world, w in report.items():
        lines += [f"## World {world} ({w['n_seeds']} seeds)", "",
                  "| | " + " | ".join(label for _, label in cols) + " | holds |",
                  "| --- " * (len(cols) + 2) + "|"]
        for name, row in w["rows"].items():
            h = w["holds"].get(name)
            verdict = " / ".join(marks[v] for v in h.values()) if h else ""
            lines.append(f"| {name} | " + " | ".join(_cell(row.get(c)) for c, _ in cols) + f" | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.gate_study", "Train an experiment in several synthetic worlds and seeds, compare every "
                   "OOD detector as the gate of Eq. 3 in each, and write STUDY/report/worlds.md and worlds.json.",
                   "python -m tf_fusion.gate_study --experiment demo --worlds 1,2,3 --seeds 2")
    p.add_argument("--experiment", required=True, help="an experiment on the synthetic archive (demo, smoke, ...)")
    p.add_argument("--worlds", default="1,2,3", help="synthetic worlds, e.g. 1,2,3 (data.synthetic.world)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per world (training.seed = data.seed = 0 … N − 1)")
    p.add_argument("--dir", help=f"study folder (default {STUDY_DIR}/gate-<experiment>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)")
    p.add_argument("--detectors", default="all", help="the detectors and combinations to compare (evaluate's "
                   "--detectors), e.g. all,binary_head+mahalanobis_class")
    p.add_argument("--collect", action="store_true", help="only build the report from the runs that exist")
    args = p.parse_args(argv)

    def job():
        try:
            worlds = [int(w) for w in args.worlds.split(",") if w.strip()]
        except ValueError:
            raise cfg.ConfigError(f"--worlds must be a comma list of world numbers, got {args.worlds!r}") from None
        base = cfg.load_experiment(args.experiment, args.set)
        if not base["data"]["synthetic"]["enabled"] or base["data"]["dir"]:
            raise cfg.ConfigError(f"{args.experiment}: a gate study needs the synthetic archive (data.synthetic.enabled, "
                                  f"no data.dir); its worlds are synthetic")
        folder = args.dir or os.path.join(STUDY_DIR, f"gate-{base['name']}")
        per_world = {}
        for w in worlds:
            for s in range(args.seeds):
                run_dir = os.path.join(folder, "runs", run_name(w, s))
                if not args.collect:
                    _train_and_evaluate(args.experiment, args.set, w, s, run_dir, args.detectors)
                results = _read(os.path.join(run_dir, REPORT, "results.json"))
                detectors = _read(os.path.join(run_dir, REPORT, "detectors.json"))
                if results and detectors:
                    per_world.setdefault(w, []).append(gate_rows(results, detectors))
        if not per_world:
            raise cfg.ConfigError(f"{folder}: no evaluated run yet; run the study without --collect first")
        report = aggregate(per_world)
        out = os.path.join(folder, REPORT)
        atomic.write_json(os.path.join(out, "worlds.json"), report)
        atomic.write_text(os.path.join(out, "worlds.md"), render(report))
        print(render(report), flush=True)
        print(f"wrote {out}/worlds.md and worlds.json", flush=True)

    return cli.run(job)


def _train_and_evaluate(experiment: str, overrides, world: int, seed: int, run_dir: str, detectors: str) -> None:
    """One world and seed: trained (skipped when finished) and evaluated with ``detectors``
    (skipped when its report already compares them all with the same gate settings)."""
    from .detector_runs import requested
    from .evaluate import evaluate
    from .trainer import train

    config = cfg.load_experiment(experiment, [*overrides, f"data.synthetic.world={world}", f"training.seed={seed}",
                                              f"data.seed={seed}", "evaluation.after_training=false"])
    print(f"== world {world}, seed {seed}: {run_dir}", flush=True)
    train(config, run_dir, _print)
    done = _read(os.path.join(run_dir, REPORT, "detectors.json")) or {}
    results = _read(Run(run_dir).file(REPORT, "results.json")) or {}
    if not set(requested(detectors)) <= set(done.get("adaptive", {}).get(CLEAR, {})) or results.get("ood") != config["ood"]:
        evaluate(run_dir, detectors=detectors, log=_print)


def _print(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
