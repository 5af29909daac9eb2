"""`python -m tf_fusion.train`: train an experiment's network into a run folder (resumable).

The run folder is described in `tf_fusion.runs`; with `evaluation.after_training` (the demo) the
command goes on with the whole job: the baseline experiment in RUN/baseline/, the OOD detectors,
the evaluation table and the SavedModel in RUN/export/1. The job holds its folders' locks from
the start and checks that every one of them can take its training before the first is trained.
"""
from __future__ import annotations

import contextlib
import os

from . import cli
from . import config as cfg
from .methods import GATED
from .runs import BASELINE, Run, default_dir, using


def parse_args(argv=None):
    p = cli.parser("tf_fusion.train", "Train an experiment's fusion network into a run folder; kill it and run "
                   "the same command again to continue from the last finished epoch.",
                   "python -m tf_fusion.train --experiment demo",
                   "python -m tf_fusion.train --experiment paper --data bigearthnet-tfrecords --set training.epochs=50")
    cli.add_experiment_flags(p)
    return p.parse_args(argv)


def baseline_dir(run_dir) -> str:
    """Where a job trains its baseline: inside its run folder, so two jobs never share one."""
    return os.path.join(os.fspath(run_dir), BASELINE)


def trainings(config: dict, run_dir, overrides=()) -> list[tuple[dict, str]]:
    """(config, run folder) of every network the job trains: the run, then with
    `evaluation.after_training` and a `baseline_experiment` the baseline in RUN/baseline/."""
    out = [(config, os.fspath(run_dir))]
    ev = config["evaluation"]
    if ev["after_training"] and ev["baseline_experiment"]:
        out.append((cfg.load_experiment(ev["baseline_experiment"], overrides), baseline_dir(run_dir)))
    return out


@contextlib.contextmanager
def holding(jobs, log=print):
    """Hold the lock of every folder of ``jobs`` (`trainings`) and check, reading only, that each
    can take its training (RunError naming the folder otherwise): before anything is trained."""
    with contextlib.ExitStack() as stack:
        for _, folder in jobs:
            stack.enter_context(using(folder, log))
        for config, folder in jobs:
            Run(folder).check(config)
        yield


def run_job(config: dict, run_dir: str, overrides=(), log=print) -> None:
    """Train; with `evaluation.after_training`, also train the baseline experiment into
    RUN/baseline/, evaluate every method and export the adaptive model to RUN/export/1."""
    jobs = trainings(config, run_dir, overrides)
    with holding(jobs, log):
        from .trainer import train

        train(config, run_dir, log)
        if not config["evaluation"]["after_training"]:
            return
        baselines = []
        for baseline, folder in jobs[1:]:
            log(f"training the baseline {baseline['name']} into {folder}")
            train(baseline, folder, log)
            baselines.append(folder)
        from .evaluate import evaluate

        evaluate(run_dir, baselines, log=log)
        if config["model"]["kind"] == GATED:  # the adaptive model, ready for TF Serving
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
