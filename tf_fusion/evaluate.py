"""`python -m tf_fusion.evaluate`: every method of a run on every test scenario, with the table.

Methods (`tf_fusion.protocol.METHODS`): `adaptive` (Eq. 3) and one per row of the table of passes
(`non_adaptive`, `optical_only`, `sar_only`) — all from one branch evaluation per batch of the
run's gated network — and the baselines of other runs given by `--baseline NAME=RUN`
(`tf_fusion.methods.BASELINES`; each entry says whether it sees the availability flags). Scenarios and the missing/corrupted protocol are
`tf_fusion.protocol`'s. Writes RUN/report/: results.json, predictions.npz (what was scored),
table.md and the plots.

The adaptive method takes p from the run's chosen detector (`ood.detector`; the binary heads by
default), fitted first when it is not (`tf_fusion.detector_runs.fit_run`). `--detectors all` (or
a comma list) also compares every detector, from the same single pass over each scenario, in
RUN/report/detectors.{md,json}, detector_scores.npz and detector_roc_<scenario>.png
(`tf_fusion.detector_report`). With `evaluation.temperature_scaling` one temperature of the
fusion classifier's logits is fitted on `val` (`scores.fit_temperature`) and every gated method
gets `ece_scaled` beside `ece`: the ECE of its prediction from the scaled logits.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from . import atomic, cli, scores
from .passes import FUSED, PASSES
from .detector_registry import BINARY_HEAD
from .methods import BASELINE_BY_NAME
from .protocol import (ADAPTIVE, ADAPTIVE_PAPER, BASELINES, METHODS, OPTICAL, REFERENCE, SAR, ordered, reported,
                       run_method, scenario_by_name, scenarios)
from .runs import REPORT, Run, RunError, using
from .shifts import apply_scenario, gate_availability

PREDICTIONS = "predictions.npz"
RESULTS = "results.json"


def baselines_of(pairs) -> dict:
    """``--baseline NAME=RUN`` (or a bare RUN, named by what its config trains) → {name: Run}."""
    out = {}
    for text in pairs:
        name, _, path = text.rpartition("=") if "=" in text else ("", "", text)
        run = Run.finished_run(path)
        name = name or run_method(run.config)
        if name not in BASELINES:
            raise RunError(f"--baseline {text}: {run.path} trains {name or 'the gated network'}; a baseline is one of "
                           f"{', '.join(BASELINES)} (write NAME=RUN)")
        if name in out:
            raise RunError(f"--baseline {text}: {name} given twice")
        out[name] = run
    return out


def predict_scenarios(run: Run, baselines: dict | None = None, log=print, detectors=()) -> tuple[dict, dict]:
    """``(pred, side)``: pred is {scenario: {"labels", "p_o", "p_s", METHOD: [N, C] probabilities}}
    for every scenario the build has data for (a method not reported on a scenario is absent);
    each scenario's sample count is checked against the manifest.

    side holds what the same pass gives beyond the methods: "detector" (the chosen one),
    "temperature" (``evaluation.temperature_scaling``, else None) and, when ``detectors`` are
    named or a temperature is fitted, "scenarios": {scenario: {"logits": {pass method: [N, C]},
    "p": {detector: {modality: [N] calibrated p}}, "raw": {detector: {modality: [N] raw score}}}}
    — each detector's own p, before the availability flags. Each branch runs once per batch."""
    import tensorflow as tf

    from tfrecords_builder import ManifestError

    from . import data as tfdata
    from . import detector_runs, gate, gate_check
    from .adaptive import build_adaptive_model
    from .model import gate_inputs
    from .ood import train_ood_heads
    from .protocol import MODALITIES

    config, manifest = run.config, run.manifest()
    d, ev = config["data"], config["evaluation"]
    spec, names = gate.parse(config["ood"]["detector"]), list(dict.fromkeys(detectors))
    # the paper's heads among other members of the gate: Eq. 3 with the heads alone is shown too
    paper = all(BINARY_HEAD in spec[m] for m in MODALITIES) and gate.label(spec) != BINARY_HEAD
    needed = detector_runs.members([*gate.detectors(spec), *names])
    fusion = run.load_model()
    heads = None
    if BINARY_HEAD in needed:  # loaded, or trained when missing or stale
        heads = train_ood_heads(run, fusion, manifest, log=log)
        heads = tuple(heads[m][0] for m in MODALITIES)
    fitted = detector_runs.fit_run(run, [n for n in needed if n != BINARY_HEAD], log, fusion, manifest)
    primary = detector_runs.gate_layers(run, fitted, heads)
    features = bool(names) or ev["temperature_scaling"] or paper
    adaptive = build_adaptive_model(fusion, *primary, with_availability=True, with_features=features,
                                    binary_heads=heads if BINARY_HEAD in detector_runs.members(names) else None)
    models = {}
    for name, other in (baselines or {}).items():
        if os.path.realpath(other.data_dir) != os.path.realpath(run.data_dir):
            raise RunError(f"baseline {name} {other.path} was trained on {other.data_dir}, the run on {run.data_dir}")
        models[name] = other.load_model()
    # reduce_retracing: the last batch of each subset has its own size; trace once for any size
    predict = tf.function(lambda x: adaptive(x, training=False), reduce_retracing=True)
    predict_base = {name: tf.function(lambda x, m=m: m(x, training=False)["probabilities"], reduce_retracing=True)
                    for name, m in models.items()}
    outputs = {ADAPTIVE: "probabilities", **{p.method: p.output for p in PASSES}}

    made = {}

    def dataset(subset):  # one pipeline per subset, iterated once by each scenario on it
        if subset not in made:
            made[subset] = tfdata.make_dataset(manifest, subset, batch_size=ev["batch_size"], deterministic=True,
                                               image_size=d["image_size"], resize_method=d["resize_method"])
        return made[subset]

    side = {"detector": gate.label(spec), "temperature": None, "gate_check": gate_check.check(run, predict, manifest, log)}
    if ev["temperature_scaling"]:
        logits, labels = [], []
        with tfdata.shard_errors(manifest, ["val"]):
            for inputs, y in dataset("val"):
                logits.append(predict(gate_availability(inputs, 1.0, 1.0))[f"logits_{FUSED.method}"].numpy())
                labels.append(y.numpy())
        if not labels:
            raise RunError(f"{run.path}: evaluation.temperature_scaling needs val patches; {manifest.dir} has none")
        side["temperature"] = scores.fit_temperature(np.concatenate(logits), np.concatenate(labels))
        log(f"  temperature of the fusion classifier, fitted on val: T = {side['temperature']:.4f}")
    if features:
        side["scenarios"] = {}
    post_hoc = {n: fitted[n] for n in detector_runs.members(names) if n != BINARY_HEAD}

    out = {}
    for scenario in scenarios(config):
        n = manifest.subset_size(scenario.subset)
        if n == 0:
            log(f"  {scenario.name}: subset {scenario.subset!r} is empty in this build; skipped")
            continue
        methods = [m for m in (*outputs, *([ADAPTIVE_PAPER] if paper else []), *models) if reported(m, scenario)]
        parts = {k: [] for k in ("labels", "p_o", "p_s", *methods)}
        kept = detector_runs.ScenarioScores(names, post_hoc) if features else None
        a_o, a_s = scenario.available(OPTICAL), scenario.available(SAR)
        with tfdata.shard_errors(manifest, [scenario.subset]):
            for i, (inputs, y) in enumerate(dataset(scenario.subset)):
                x = apply_scenario(inputs, scenario, seed=(ev["seed"], i))
                res = predict(gate_availability(x, a_o, a_s))
                parts["labels"].append(y.numpy())
                parts["p_o"].append(res["p_optical"].numpy().reshape(-1))
                parts["p_s"].append(res["p_sar"].numpy().reshape(-1))
                for method in methods:
                    if method in outputs:
                        parts[method].append(res[outputs[method]].numpy())
                    elif method == ADAPTIVE_PAPER:
                        parts[method].append(paper_heads_prediction(res, a_o, a_s))
                    else:  # the availability flags to those that take them; the others see the zeros
                        gates = (a_o, a_s) if BASELINE_BY_NAME[method].sees_availability else (1.0, 1.0)
                        parts[method].append(predict_base[method](gate_inputs(x, *gates)).numpy())
                if kept is not None:
                    kept.add(res)
        out[scenario.name] = {k: np.concatenate(v) for k, v in parts.items()}
        if len(out[scenario.name]["labels"]) != n:
            raise ManifestError(f"{manifest.path}: read {len(out[scenario.name]['labels'])} records of "
                                f"{scenario.subset!r}, the manifest lists {n}; {manifest.remedy()}")
        if kept is not None:
            side["scenarios"][scenario.name] = kept.result()
        log(f"  {scenario.name}: {n} samples")
    return out, side


def paper_heads_prediction(res: dict, optical: float, sar: float) -> np.ndarray:
    """Eq. 3 with the paper's binary heads' p alone (the adaptive graph's ``with_features``
    outputs of a gate that holds them), under the scenario's availability flags."""
    from scipy.special import expit

    from .adaptive import expected_prediction

    passes = {p.name: expit(np.asarray(res[f"logits_{p.method}"], np.float64)).astype(np.float32) for p in PASSES}
    p_o, p_s = (np.asarray(res[f"p_{m}_{BINARY_HEAD}"]).reshape(-1) * flag for m, flag in ((OPTICAL, optical),
                                                                                           (SAR, sar)))
    return np.asarray(expected_prediction(p_o, p_s, passes))


def temperature_results(results: dict, pred: dict, side: dict, config: dict) -> None:
    """Add ``ece_scaled`` to every gated method on every labelled scenario: the ECE of its
    prediction from the temperature-scaled logits (the passes directly; non-adaptive at the
    available modalities' gates and adaptive through Eq. 3 with the run's p, as in the graph),
    and ``temperature`` to ``results``."""
    from .adaptive import expected_prediction

    t = side["temperature"]
    results["temperature"] = t
    for name, arrays in pred.items():
        scenario = scenario_by_name(name)
        if not scenario.has_labels:
            continue
        passes = {p.name: scores.scaled_probabilities(side["scenarios"][name]["logits"][p.method], t) for p in PASSES}
        flags = {k: np.full(len(arrays["labels"]), scenario.available(m), np.float32) for k, m in (("o", OPTICAL),
                                                                                                  ("s", SAR))}
        scaled = {p.method: passes[p.name] for p in PASSES}
        scaled[FUSED.method] = np.asarray(expected_prediction(flags["o"], flags["s"], passes))
        scaled[ADAPTIVE] = np.asarray(expected_prediction(arrays["p_o"], arrays["p_s"], passes))
        for method, p in scaled.items():
            if method in arrays:
                results["methods"][method][name]["ece_scaled"] = scores.expected_calibration_error(
                    arrays["labels"], p, config["evaluation"]["ece_bins"])


def compute_results(pred: dict, config: dict, classes) -> dict:
    """{"methods": {METHOD: {SCENARIO: {METRIC: value}}}} from `predict_scenarios`' arrays;
    per-class lists become {class name: value}."""
    ev = config["evaluation"]
    present = {m for arrays in pred.values() for m in arrays} - {"labels", "p_o", "p_s"}
    results = {"methods": {m: {} for m in ordered(present, METHODS)}}
    for name, arrays in pred.items():
        has_labels = scenario_by_name(name).has_labels
        for m in results["methods"]:
            if m not in arrays:
                continue
            metrics = scores.summarize(arrays["labels"], arrays[m], ev["threshold"], with_f=has_labels,
                                       n_bins=ev["ece_bins"])
            for key in ("ap_per_class", "f1_per_class"):
                if key in metrics:
                    metrics[key] = dict(zip(classes, metrics[key]))
            if name != REFERENCE and m in pred[REFERENCE]:
                metrics.update(scores.separation_scores(pred[REFERENCE][m], arrays[m]))
            results["methods"][m][name] = metrics
        if name != REFERENCE:
            # each detector on its own: clear test patches (in) against this scenario's (out),
            # a lower in-distribution probability meaning shifted
            for key, modality in (("p_o", "optical"), ("p_s", "sar")):
                sep = scores.separation(-pred[REFERENCE][key], -arrays[key])
                results["methods"][ADAPTIVE][name].update({f"ood_{k}_{modality}": v for k, v in sep.items()})
    return results


def write_predictions(path: str, pred: dict) -> None:
    """predictions.npz: `SCENARIO/labels` [N, C] multi-hot, `SCENARIO/METHOD` [N, C]
    probabilities, `SCENARIO/p_o` and `SCENARIO/p_s` [N]."""
    arrays = {f"{scenario}/{key}": value for scenario, parts in pred.items() for key, value in parts.items()}
    atomic.write_with(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")


def plot_arrays(pred: dict) -> dict:
    methods = ordered([m for m in pred[REFERENCE] if m not in ("labels", "p_o", "p_s")], METHODS)
    arrays = {
        "entropy": {m: {s: scores.entropy_bits(a[m]) for s, a in pred.items() if m in a} for m in methods},
        "reliability": {m: (pred[REFERENCE]["labels"], pred[REFERENCE][m]) for m in methods},
    }
    if "ood_classes" in pred:
        clear, ood = pred[REFERENCE], pred["ood_classes"]
        labels = np.concatenate([np.ones(len(clear["p_o"])), np.zeros(len(ood["p_o"]))])
        arrays["ood_roc"] = {"optical": (labels, np.concatenate([clear["p_o"], ood["p_o"]])),
                             "sar": (labels, np.concatenate([clear["p_s"], ood["p_s"]]))}
    return arrays


def evaluate(run_dir, baselines=(), seed_dirs=(), detectors=None, log=print) -> dict:
    """Evaluate ``run_dir`` (and runs of more seeds) beside the baseline runs (``NAME=RUN``
    texts, see `baselines_of`), write RUN/report/, return the results. ``detectors``: the
    ``--detectors`` text (``all`` or a comma list): also compare those detectors
    (`tf_fusion.detector_report`), from the same pass. Holds the locks of the runs it writes
    (`runs.using`)."""
    with contextlib.ExitStack() as held:  # the runs whose folders it writes (report, OOD heads, detectors)
        for path in dict.fromkeys(os.path.normpath(r) for r in (run_dir, *seed_dirs)):
            held.enter_context(using(path, log, create=False))
        return _evaluate(run_dir, baselines, seed_dirs, detectors, log)


def _evaluate(run_dir, baselines, seed_dirs, detectors, log) -> dict:
    from . import detector_report
    from .detector_runs import requested
    from .plots import write_plots
    from .report import render_findings, render_table, write_table

    names = requested(detectors) if detectors else []
    runs = [Run.finished_run(r) for r in (run_dir, *seed_dirs)]
    if run_method(runs[0].config) is not None:
        raise RunError(f"{runs[0].path} trains {run_method(runs[0].config)}; evaluate the gated network's run and give "
                       f"this one as --baseline {run_method(runs[0].config)}={runs[0].path}")
    others = baselines_of(baselines)
    per_seed, per_seed_detectors = [], []
    for i, run in enumerate(runs):
        log(f"evaluating {run.path}" + (f" (seed run {i + 1}/{len(runs)})" if len(runs) > 1 else ""))
        pred, side = predict_scenarios(run, others, log, names)
        per_seed.append(compute_results(pred, run.config, run.summary["classes"]))
        if side["temperature"] is not None:
            temperature_results(per_seed[-1], pred, side, run.config)
        if names:
            per_seed_detectors.append(detector_report.compare(pred, side, names))
        if i == 0:
            first_pred, first_side = pred, side
    results = per_seed[0] if len(runs) == 1 else {**scores.aggregate_seeds(per_seed), "per_seed": per_seed,
                                                 "runs": [r.path for r in runs]}
    if len(runs) > 1 and first_side["temperature"] is not None:
        results["temperature"] = [r["temperature"] for r in per_seed]
    results.update(run=os.path.abspath(runs[0].path), detector=first_side["detector"], ood=runs[0].config["ood"],
                   gate_check=first_side["gate_check"],
                   baselines={name: os.path.abspath(r.path) for name, r in others.items()})
    out = runs[0].file(REPORT)
    atomic.write_json(os.path.join(out, RESULTS), results)
    write_predictions(os.path.join(out, PREDICTIONS), first_pred)
    title = os.path.basename(os.path.normpath(runs[0].path))
    write_table(results, out, title=f"Evaluation of {title}")
    write_plots(plot_arrays(first_pred), out)
    log(render_table(results))
    log(render_findings(results))
    log(f"wrote {out}/{RESULTS}, {PREDICTIONS}, table.md and plots")
    if names:
        comparison = detector_report.aggregate(per_seed_detectors)
        written = detector_report.write(out, comparison, first_side, names, title=title,
                                        runs=[r.path for r in runs])
        log(detector_report.render(comparison, names, title=title))
        log(f"wrote {', '.join(os.path.relpath(w, out) for w in written)} in {out}")
    return results


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.evaluate", "Evaluate every method of a finished run (and of its baselines) on every "
                   "test scenario and write RUN/report/ (results.json, predictions.npz, table.md, plots).",
                   "python -m tf_fusion.evaluate --run runs/demo --baseline late_fusion=runs/demo/baseline",
                   "python -m tf_fusion.evaluate --run runs/paper --baseline early_fusion=runs/paper_early_fusion "
                   "--baseline embracenet=runs/paper_embracenet",
                   "python -m tf_fusion.evaluate --run runs/demo --detectors all")
    p.add_argument("--run", required=True, help="a finished tf_fusion.train run folder of the gated network")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=RUN",
                   help=f"a baseline run: NAME=RUN with NAME one of {', '.join(BASELINES)} (repeatable)")
    p.add_argument("--baseline-run", metavar="RUN", help="a baseline run named by what it trains (as --baseline RUN)")
    p.add_argument("--seeds", nargs="*", default=[], metavar="RUN_DIR", help="runs of the same experiment with other seeds")
    p.add_argument("--detectors", metavar="all|NAME,...",
                   help="also compare these OOD detectors (all: binary_head and every post-hoc score), fitting the "
                        "post-hoc ones in RUN/detectors when needed; writes report/detectors.md, .json, "
                        "detector_scores.npz, detector_roc_*.png")
    args = p.parse_args(argv)
    baselines = args.baseline + ([args.baseline_run] if args.baseline_run else [])
    return cli.run(lambda: evaluate(args.run, baselines, args.seeds, args.detectors))


if __name__ == "__main__":
    raise SystemExit(main())
