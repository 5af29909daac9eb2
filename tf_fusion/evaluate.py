"""`python -m tf_fusion.evaluate`: every method of a run on every test scenario, with the table.

Methods (`tf_fusion.protocol.METHODS`): `adaptive` (Eq. 3) and one per row of the table of passes
(`non_adaptive`, `optical_only`, `sar_only`) — all from one branch evaluation per batch of the
run's gated network — and the baselines of other runs given by `--baseline NAME=RUN`
(`early_fusion`, `late_fusion`, `embracenet`). Scenarios and the missing/corrupted protocol are
`tf_fusion.protocol`'s. Writes RUN/report/: results.json, predictions.npz (what was scored),
table.md and the plots.
"""
from __future__ import annotations

import os

import numpy as np

from . import atomic, cli, scores
from .passes import PASSES
from .protocol import (ADAPTIVE, BASELINES, EMBRACENET, INPUT_KEY, METHODS, OPTICAL, REFERENCE, SAR,
                       ordered, reported, run_method, scenario_by_name, scenarios)
from .runs import REPORT, Run, RunError

PREDICTIONS = "predictions.npz"
RESULTS = "results.json"


def apply_scenario(inputs: dict, scenario, seed):
    """The scenario's change to a batch of normalised inputs (stateless noise from ``seed``):
    a missing modality becomes zeros, a corrupted one N(0, 1) noise, a noisy one gets Gaussian
    noise of std ``scenario.strength`` added; the other modality is untouched."""
    import tensorflow as tf

    if scenario.change is None:
        return inputs
    key = INPUT_KEY[scenario.modality]
    x = inputs[key]
    noise = tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
    changed = {"missing": tf.zeros_like(x), "replaced": noise, "noise": x + scenario.strength * noise}[scenario.change]
    return {**inputs, key: changed}


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


def predict_scenarios(run: Run, baselines: dict | None = None, log=print) -> dict:
    """{scenario: {"labels", "p_o", "p_s", METHOD: [N, C] probabilities}} for every scenario the
    build has data for (a method not reported on a scenario is absent); each scenario's sample
    count is checked against the manifest."""
    import tensorflow as tf

    from tfrecords_builder import ManifestError

    from . import data as tfdata
    from .adaptive import build_adaptive_model
    from .model import gate_inputs
    from .ood import train_ood_heads

    config, manifest = run.config, run.manifest()
    fusion = run.load_model()
    heads = train_ood_heads(run, fusion, manifest, log=log)  # loaded, or trained when missing or stale
    adaptive = build_adaptive_model(fusion, heads[OPTICAL][0], heads[SAR][0], with_availability=True)
    d, ev = config["data"], config["evaluation"]
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

    out = {}
    for scenario in scenarios(config):
        n = manifest.subset_size(scenario.subset)
        if n == 0:
            log(f"  {scenario.name}: subset {scenario.subset!r} is empty in this build; skipped")
            continue
        ds = tfdata.make_dataset(manifest, scenario.subset, batch_size=ev["batch_size"], deterministic=True,
                                 image_size=d["image_size"], resize_method=d["resize_method"])
        methods = [m for m in (*outputs, *models) if reported(m, scenario)]
        parts = {k: [] for k in ("labels", "p_o", "p_s", *methods)}
        a_o, a_s = scenario.available(OPTICAL), scenario.available(SAR)
        with tfdata.shard_errors(manifest, [scenario.subset]):
            for i, (inputs, y) in enumerate(ds):
                x = apply_scenario(inputs, scenario, seed=(ev["seed"], i))
                res = predict(gate_availability(x, a_o, a_s))
                parts["labels"].append(y.numpy())
                parts["p_o"].append(res["p_optical"].numpy().reshape(-1))
                parts["p_s"].append(res["p_sar"].numpy().reshape(-1))
                for method in methods:
                    if method in outputs:
                        parts[method].append(res[outputs[method]].numpy())
                    else:  # EmbraceNet selects among the available; early and late fusion see the zeros
                        gates = (a_o, a_s) if method == EMBRACENET else (1.0, 1.0)
                        parts[method].append(predict_base[method](gate_inputs(x, *gates)).numpy())
        out[scenario.name] = {k: np.concatenate(v) for k, v in parts.items()}
        if len(out[scenario.name]["labels"]) != n:
            raise ManifestError(f"{manifest.path}: read {len(out[scenario.name]['labels'])} records of "
                                f"{scenario.subset!r}, the manifest lists {n}; {manifest.remedy()}")
        log(f"  {scenario.name}: {n} samples")
    return out


def gate_availability(x: dict, optical: float, sar: float) -> dict:
    """The adaptive graph's inputs: images plus per-sample availability flags."""
    from .model import gate_inputs

    gated = gate_inputs(x, optical, sar)
    return {"s2": x["s2"], "s1": x["s1"], "optical_available": gated["lambda_opt"], "sar_available": gated["lambda_sar"]}


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


def evaluate(run_dir, baselines=(), seed_dirs=(), log=print) -> dict:
    """Evaluate ``run_dir`` (and runs of more seeds) beside the baseline runs (``NAME=RUN``
    texts, see `baselines_of`), write RUN/report/, return the results."""
    from .plots import write_plots
    from .report import render_findings, render_table, write_table

    runs = [Run.finished_run(r) for r in (run_dir, *seed_dirs)]
    if run_method(runs[0].config) is not None:
        raise RunError(f"{runs[0].path} trains {run_method(runs[0].config)}; evaluate the gated network's run and give "
                       f"this one as --baseline {run_method(runs[0].config)}={runs[0].path}")
    others = baselines_of(baselines)
    per_seed = []
    for i, run in enumerate(runs):
        log(f"evaluating {run.path}" + (f" (seed run {i + 1}/{len(runs)})" if len(runs) > 1 else ""))
        pred = predict_scenarios(run, others, log)
        per_seed.append(compute_results(pred, run.config, run.summary["classes"]))
        if i == 0:
            first_pred = pred
    results = per_seed[0] if len(runs) == 1 else {**scores.aggregate_seeds(per_seed), "per_seed": per_seed,
                                                 "runs": [r.path for r in runs]}
    results.update(run=os.path.abspath(runs[0].path),
                   baselines={name: os.path.abspath(r.path) for name, r in others.items()})
    out = runs[0].file(REPORT)
    atomic.write_json(os.path.join(out, RESULTS), results)
    write_predictions(os.path.join(out, PREDICTIONS), first_pred)
    write_table(results, out, title=f"Evaluation of {os.path.basename(os.path.normpath(runs[0].path))}")
    write_plots(plot_arrays(first_pred), out)
    log(render_table(results))
    log(render_findings(results))
    log(f"wrote {out}/{RESULTS}, {PREDICTIONS}, table.md and plots")
    return results


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.evaluate", "Evaluate every method of a finished run (and of its baselines) on every "
                   "test scenario and write RUN/report/ (results.json, predictions.npz, table.md, plots).",
                   "python -m tf_fusion.evaluate --run runs/demo --baseline late_fusion=runs/demo_baseline",
                   "python -m tf_fusion.evaluate --run runs/paper --baseline early_fusion=runs/paper_early_fusion "
                   "--baseline embracenet=runs/paper_embracenet")
    p.add_argument("--run", required=True, help="a finished tf_fusion.train run folder of the gated network")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=RUN",
                   help="a baseline run: early_fusion=RUN, late_fusion=RUN or embracenet=RUN (repeatable)")
    p.add_argument("--baseline-run", metavar="RUN", help="a baseline run named by what it trains (as --baseline RUN)")
    p.add_argument("--seeds", nargs="*", default=[], metavar="RUN_DIR", help="runs of the same experiment with other seeds")
    args = p.parse_args(argv)
    baselines = args.baseline + ([args.baseline_run] if args.baseline_run else [])
    return cli.run(lambda: evaluate(args.run, baselines, args.seeds))


if __name__ == "__main__":
    raise SystemExit(main())
