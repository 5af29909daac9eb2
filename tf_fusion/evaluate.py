"""`python -m tf_fusion.evaluate`: every method of a run on every test scenario, with the table.

Methods: `adaptive` (Eq. 3) and one per row of the table of passes (`non_adaptive`,
`optical_only`, `sar_only`) — all from one branch evaluation per batch of the run's model — and
`baseline` from `--baseline-run` (a model trained on the fused pass only, or early fusion).
Scenarios (`tf_fusion.protocol.SCENARIOS`) are subsets of the build, or the clear test subset with
one input replaced by zeros (missing) or with seeded Gaussian noise added to the normalised input
(corrupted). Writes RUN/report/: results.json, predictions.npz (what was scored), table.md and
the plots.
"""
from __future__ import annotations

import os

import numpy as np

from . import atomic, cli, scores
from .protocol import ADAPTIVE, BASELINE, GATED_METHODS, INPUT_KEY, REFERENCE, SCENARIOS
from .passes import PASSES
from .runs import REPORT, Run

PREDICTIONS = "predictions.npz"
RESULTS = "results.json"


def apply_scenario(inputs: dict, scenario, std: float, seed):
    """The scenario's change to a batch of normalised inputs: a missing modality is zeros, a
    corrupted one gets Gaussian noise of std ``std`` (stateless, from ``seed``) added."""
    import tensorflow as tf

    if scenario.change is None:
        return inputs
    key = INPUT_KEY[scenario.modality]
    x = inputs[key]
    if scenario.change == "missing":
        changed = tf.zeros_like(x)
    else:
        changed = x + std * tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
    return {**inputs, key: changed}


def predict_scenarios(run: Run, baseline: Run | None = None, log=print) -> dict:
    """{scenario: {"labels", "p_o", "p_s", METHOD: [N, C] probabilities}} for every scenario the
    build has data for; each scenario's sample count is checked against the manifest."""
    import tensorflow as tf

    from tfrecords_builder import ManifestError

    from . import data as tfdata
    from .adaptive import build_adaptive_model
    from .model import gate_inputs
    from .ood import train_ood_heads
    from .protocol import OPTICAL, SAR
    from .data import shard_errors

    config, manifest = run.config, run.manifest()
    fusion = run.load_model()
    heads = train_ood_heads(run, fusion, manifest, log=log)  # loaded, or trained when missing or stale
    adaptive = build_adaptive_model(fusion, heads[OPTICAL][0], heads[SAR][0])
    base = baseline.load_model() if baseline else None
    d, ev = config["data"], config["evaluation"]
    # reduce_retracing: the last batch of each subset has its own size; trace once for any size
    predict = tf.function(lambda x: adaptive(x, training=False), reduce_retracing=True)
    predict_base = tf.function(lambda x: base(x, training=False)["probabilities"], reduce_retracing=True) if base else None
    outputs = {ADAPTIVE: "probabilities", **{p.method: p.output for p in PASSES}}

    out = {}
    for scenario in SCENARIOS:
        n = manifest.subset_size(scenario.subset)
        if n == 0:
            log(f"  {scenario.name}: subset {scenario.subset!r} is empty in this build; skipped")
            continue
        ds = tfdata.make_dataset(manifest, scenario.subset, batch_size=ev["batch_size"], deterministic=True,
                                 image_size=d["image_size"], resize_method=d["resize_method"])
        parts = {k: [] for k in ("labels", "p_o", "p_s", *GATED_METHODS, BASELINE)}
        with shard_errors(manifest, [scenario.subset]):
            for i, (inputs, y) in enumerate(ds):
                x = apply_scenario(inputs, scenario, ev["corruption_std"], seed=(ev["seed"], i))
                res = predict(x)
                parts["labels"].append(y.numpy())
                parts["p_o"].append(res["p_optical"].numpy().reshape(-1))
                parts["p_s"].append(res["p_sar"].numpy().reshape(-1))
                for method, key in outputs.items():
                    parts[method].append(res[key].numpy())
                if predict_base is not None:
                    parts[BASELINE].append(predict_base(gate_inputs(x, 1.0, 1.0)).numpy())
        out[scenario.name] = {k: np.concatenate(v) for k, v in parts.items() if v}
        if len(out[scenario.name]["labels"]) != n:
            raise ManifestError(f"{manifest.path}: read {len(out[scenario.name]['labels'])} records of "
                                f"{scenario.subset!r}, the manifest lists {n}; {manifest.remedy()}")
        log(f"  {scenario.name}: {n} samples")
    return out


def compute_results(pred: dict, config: dict) -> dict:
    """{"methods": {METHOD: {SCENARIO: {METRIC: value}}}} from `predict_scenarios`' arrays."""
    from .protocol import SCENARIO_BY_NAME

    ev = config["evaluation"]
    methods = [m for m in (BASELINE, *GATED_METHODS) if m in pred[REFERENCE]]
    results = {"methods": {m: {} for m in methods}}
    for name, arrays in pred.items():
        has_labels = SCENARIO_BY_NAME[name].has_labels
        for m in methods:
            metrics = scores.summarize(arrays["labels"], arrays[m], ev["threshold"], with_f=has_labels,
                                       n_bins=ev["ece_bins"])
            if name != REFERENCE:
                metrics.update(scores.separation_scores(pred[REFERENCE][m], arrays[m]))
            results["methods"][m][name] = metrics
        if name != REFERENCE:
            # each detector on its own: clear test patches (in) against this scenario's (out)
            for key, metric in (("p_o", "ood_auroc_optical"), ("p_s", "ood_auroc_sar")):
                results["methods"][ADAPTIVE][name][metric] = scores.separation(-pred[REFERENCE][key], -arrays[key])["auroc"]
    return results


def write_predictions(path: str, pred: dict) -> None:
    """predictions.npz: `SCENARIO/labels` [N, C] multi-hot, `SCENARIO/METHOD` [N, C]
    probabilities, `SCENARIO/p_o` and `SCENARIO/p_s` [N]."""
    arrays = {f"{scenario}/{key}": value for scenario, parts in pred.items() for key, value in parts.items()}
    atomic.write_with(path, lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")


def plot_arrays(pred: dict) -> dict:
    methods = [m for m in (BASELINE, *GATED_METHODS) if m in pred[REFERENCE]]
    arrays = {
        "entropy": {m: {s: scores.entropy_bits(a[m]) for s, a in pred.items()} for m in methods},
        "reliability": {m: (pred[REFERENCE]["labels"], pred[REFERENCE][m]) for m in methods},
    }
    if "ood_classes" in pred:
        clear, ood = pred[REFERENCE], pred["ood_classes"]
        labels = np.concatenate([np.ones(len(clear["p_o"])), np.zeros(len(ood["p_o"]))])
        arrays["ood_roc"] = {"optical": (labels, np.concatenate([clear["p_o"], ood["p_o"]])),
                             "sar": (labels, np.concatenate([clear["p_s"], ood["p_s"]]))}
    return arrays


def evaluate(run_dir, baseline_dir=None, seed_dirs=(), log=print) -> dict:
    """Evaluate ``run_dir`` (and runs of more seeds), write RUN/report/, return the results."""
    from .plots import write_plots
    from .report import render_findings, render_table, write_table

    runs = [Run.finished_run(r) for r in (run_dir, *seed_dirs)]
    baseline = Run.finished_run(baseline_dir) if baseline_dir else None
    per_seed = []
    for i, run in enumerate(runs):
        log(f"evaluating {run.path}" + (f" (seed run {i + 1}/{len(runs)})" if len(runs) > 1 else ""))
        pred = predict_scenarios(run, baseline, log)
        per_seed.append(compute_results(pred, run.config))
        if i == 0:
            first_pred = pred
    results = per_seed[0] if len(runs) == 1 else {**scores.aggregate_seeds(per_seed), "per_seed": per_seed,
                                                 "runs": [r.path for r in runs]}
    results.update(run=os.path.abspath(runs[0].path), baseline_run=os.path.abspath(baseline.path) if baseline else None)
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
    p = cli.parser("tf_fusion.evaluate", "Evaluate every method of a finished run on every test scenario and "
                   "write RUN/report/ (results.json, predictions.npz, table.md, plots).",
                   "python -m tf_fusion.evaluate --run runs/demo --baseline-run runs/demo_baseline")
    p.add_argument("--run", required=True, help="a finished tf_fusion.train run folder")
    p.add_argument("--baseline-run", help="run folder of the baseline (fused-pass-only or early fusion)")
    p.add_argument("--seeds", nargs="*", default=[], metavar="RUN_DIR", help="runs of the same experiment with other seeds")
    args = p.parse_args(argv)
    return cli.run(lambda: evaluate(args.run, args.baseline_run, args.seeds))


if __name__ == "__main__":
    raise SystemExit(main())
