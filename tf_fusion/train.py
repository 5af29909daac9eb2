"""`python -m tf_fusion.train`: train an experiment's network into a run folder (resumable).

The run folder is described in `tf_fusion.runs`; with `evaluation.after_training` (the demo) the
command goes on with the whole job: the baseline experiment beside the run, the OOD detectors,
the evaluation table and the SavedModel in RUN/export/1.
"""
from __future__ import annotations

import os

from . import cli
from . import config as cfg
from .runs import default_dir


def parse_args(argv=None):
    p = cli.parser("tf_fusion.train", "Train an experiment's fusion network into a run folder; kill it and run "
                   "the same command again to continue from the last finished epoch.",
                   "python -m tf_fusion.train --experiment demo",
                   "python -m tf_fusion.train --experiment paper --data bigearthnet-tfrecords --set training.epochs=50")
    cli.add_experiment_flags(p)
    return p.parse_args(argv)


def run_job(config: dict, run_dir: str, overrides=(), log=print) -> None:
    """Train; with `evaluation.after_training`, also train the baseline experiment beside the
    run, evaluate every method and export the adaptive model to RUN/export/1."""
    from .trainer import train

    train(config, run_dir, log)
    ev = config["evaluation"]
    if not ev["after_training"]:
        return
    baseline_dir = None
    if ev["baseline_experiment"]:
        baseline = cfg.load_experiment(ev["baseline_experiment"], overrides)
        baseline_dir = os.path.join(os.path.dirname(os.path.normpath(run_dir)), baseline["name"])
        log(f"training the baseline {baseline['name']} into {baseline_dir}")
        train(baseline, baseline_dir, log)
    from .evaluate import evaluate

    evaluate(run_dir, [baseline_dir] if baseline_dir else [], log=log)
    if config["model"]["kind"] == "late_fusion":  # the adaptive model, ready for TF Serving
        from .export import export_run

        export_run(run_dir, overwrite=True, log=log)


def main(argv=None) -> int:
    args = parse_args(argv)

    def job():
        config = cfg.load_experiment(args.experiment, cli.overrides(args))
        run_job(config, args.run_dir or default_dir(config), cli.overrides(args), log=_print)

    return cli.run(job)


def _print(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
