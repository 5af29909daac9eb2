"""`python -m tf_fusion.evaluate --run RUN_DIR [--baseline-run DIR] [--seeds RUN_DIR ...]`.

Evaluates every method on every scenario of the paper's Table 1 and the extension, and writes
RUN_DIR/report/: results.json, table.md (the paper's layout with its figures beside ours) and
PNG plots. Methods: `adaptive` (Eq. 3), `non_adaptive` (λ = (1, 1)), `optical_only` (1, 0),
`sar_only` (0, 1) — all from one encoder evaluation of the run's model — and `baseline` from
`--baseline-run` (a model trained on the fused pass only, or early fusion). Scenarios are
subsets of the build, or the clear test subset with one input replaced by zeros (missing) or
with seeded Gaussian noise added to the normalised input (corrupted).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import config as cfg
from . import scores

# scenario → (subset of the build, what happens to the inputs)
SCENARIOS = {
    "clear": ("test", None),
    "ood_classes": ("ood_test", None),
    "cloudy": ("cloudy", None),
    "very_cloudy": ("very_cloudy", None),
    "snow": ("snow", None),
    "missing_sar": ("test", "missing_sar"),
    "missing_optical": ("test", "missing_optical"),
    "corrupted_optical": ("test", "corrupted_optical"),
    "corrupted_sar": ("test", "corrupted_sar"),
}
METHOD_OUTPUTS = {"adaptive": "probabilities", "non_adaptive": "probabilities_non_adaptive",
                  "optical_only": "probabilities_optical", "sar_only": "probabilities_sar"}


def shift_inputs(inputs: dict, kind, std: float, seed):
    """The scenario's change to a batch: a missing modality is zeros, a corrupted one gets noise."""
    import tensorflow as tf

    if kind is None:
        return inputs
    key = "s1" if kind.endswith("sar") else "s2"
    x = inputs[key]
    if kind.startswith("missing"):
        shifted = tf.zeros_like(x)
    else:
        shifted = x + std * tf.random.stateless_normal(tf.shape(x), seed=seed, dtype=x.dtype)
    return {**inputs, key: shifted}


def predict_scenarios(run_dir: str, baseline_dir=None, log=print):
    """Per scenario: labels and each method's probabilities, plus the detectors' p_o and p_s."""
    import tensorflow as tf

    from . import data as tfdata
    from .adaptive import build_adaptive_model
    from .model import gate_inputs
    from .ood import load_run, train_ood_heads

    config, summary, fusion = load_run(run_dir)
    data_dir = summary["data_dir"]
    manifest = tfdata.load_manifest(data_dir, partition=config["data"]["partition"])
    d = config["data"]
    # loads the saved detectors, or trains them when missing or trained with other `ood` settings
    heads = train_ood_heads(fusion, data_dir, manifest, config["ood"], run_dir, log=log, image_size=d["image_size"],
                            resize_method=d["resize_method"], augment=d["augment"], deterministic=d["deterministic"])
    adaptive = build_adaptive_model(fusion, heads["head_opt"], heads["head_sar"])
    baseline = load_run(baseline_dir)[2] if baseline_dir else None
    ev = config["evaluation"]
    # reduce_retracing: the last batch of each subset has its own size; trace once for any size
    predict = tf.function(lambda x: adaptive(x, training=False), reduce_retracing=True)
    predict_base = (tf.function(lambda x: baseline(x, training=False)["probabilities"], reduce_retracing=True)
                    if baseline else None)

    out = {}
    for scenario, (subset, kind) in SCENARIOS.items():
        if tfdata.subset_size(manifest, subset) == 0:
            log(f"  {scenario}: subset {subset!r} is empty in this build; skipped")
            continue
        ds = tfdata.make_dataset(data_dir, subset, batch_size=ev["batch_size"], training=False, deterministic=True,
                                 image_size=d["image_size"], resize_method=d["resize_method"], manifest=manifest)
        parts = {k: [] for k in ("y", "p_o", "p_s", *METHOD_OUTPUTS, "baseline")}
        for i, (inputs, y) in enumerate(ds):
            x = shift_inputs(inputs, kind, ev["corruption_std"], seed=(ev["seed"], i))
            res = predict(x)
            parts["y"].append(y.numpy())
            parts["p_o"].append(res["p_optical"].numpy().reshape(-1))
            parts["p_s"].append(res["p_sar"].numpy().reshape(-1))
            for method, key in METHOD_OUTPUTS.items():
                parts[method].append(res[key].numpy())
            if predict_base is not None:
                parts["baseline"].append(predict_base(gate_inputs(x, 1.0, 1.0)).numpy())
        out[scenario] = {k: np.concatenate(v) for k, v in parts.items() if v}
        log(f"  {scenario}: {len(out[scenario]['y'])} samples")
    return out, config


def compute_results(pred: dict, config: dict) -> dict:
    """{"methods": {METHOD: {SCENARIO: {METRIC: value}}}} from `predict_scenarios`' arrays."""
    ev = config["evaluation"]
    methods = [m for m in ("baseline", *METHOD_OUTPUTS) if m in pred["clear"]]
    results = {"methods": {m: {} for m in methods}}
    for scenario, arrays in pred.items():
        with_f = scenario != "ood_classes"
        for m in methods:
            metrics = scores.summarize(arrays["y"], arrays[m], ev["threshold"], with_f=with_f, n_bins=ev["ece_bins"])
            if scenario != "clear":
                metrics.update(scores.separation_scores(pred["clear"][m], arrays[m]))
            results["methods"][m][scenario] = metrics
        if scenario != "clear":
            # each detector on its own: clear test patches (in) against this scenario's (out)
            for key, name in (("p_o", "ood_auroc_optical"), ("p_s", "ood_auroc_sar")):
                results["methods"]["adaptive"][scenario][name] = scores.separation(-pred["clear"][key], -arrays[key])["auroc"]
    return results


def plot_arrays(pred: dict) -> dict:
    methods = [m for m in ("baseline", *METHOD_OUTPUTS) if m in pred["clear"]]
    arrays = {
        "entropy": {m: {s: scores.entropy_bits(a[m]) for s, a in pred.items()} for m in methods},
        "reliability": {m: (pred["clear"]["y"], pred["clear"][m]) for m in methods},
    }
    if "ood_classes" in pred:
        clear, ood = pred["clear"], pred["ood_classes"]
        labels = np.concatenate([np.ones(len(clear["p_o"])), np.zeros(len(ood["p_o"]))])
        arrays["ood_roc"] = {"optical": (labels, np.concatenate([clear["p_o"], ood["p_o"]])),
                             "sar": (labels, np.concatenate([clear["p_s"], ood["p_s"]]))}
    return arrays


def evaluate(run_dir: str, baseline_dir=None, seed_dirs=(), log=print) -> dict:
    """Evaluate `run_dir` (and more seeds), write run_dir/report/, return the results."""
    from .report import render_findings, render_table, write_report

    runs = [run_dir, *seed_dirs]
    per_seed = []
    for i, run in enumerate(runs):
        log(f"evaluating {run}" + (f" (seed run {i + 1}/{len(runs)})" if len(runs) > 1 else ""))
        pred, config = predict_scenarios(run, baseline_dir, log)
        per_seed.append(compute_results(pred, config))
        if i == 0:
            first_pred = pred
    results = per_seed[0] if len(runs) == 1 else {**scores.aggregate_seeds(per_seed), "per_seed": per_seed, "runs": runs}
    results.update(run=os.path.abspath(run_dir), baseline_run=os.path.abspath(baseline_dir) if baseline_dir else None)
    out = os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    write_report(results, out, plot_arrays(first_pred), title=f"Evaluation of {os.path.basename(os.path.normpath(run_dir))}")
    log(render_table(results))
    log(render_findings(results))
    log(f"wrote {out}/results.json, table.md and plots")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_fusion.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished tf_fusion.train run folder")
    p.add_argument("--baseline-run", help="run folder of the baseline (fused-pass-only or early fusion)")
    p.add_argument("--seeds", nargs="*", default=[], metavar="RUN_DIR", help="runs of the same experiment with other seeds")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return cfg.run_cli(lambda: evaluate(args.run, args.baseline_run, args.seeds), FileNotFoundError)


if __name__ == "__main__":
    raise SystemExit(main())
