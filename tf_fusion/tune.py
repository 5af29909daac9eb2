"""`python -m tf_fusion.tune --experiment NAME [--data DIR] [--run-dir DIR] [--tuner random|bayesian|hyperband] [--max-trials N] [--set key=value ...]`.

KerasTuner search in two stages over the experiment's `tuning:` search space: (1) the fusion
network's pass weights and learning rate, scored on `val` (`tuning.objective`, default
`val_robust_f1`); (2) the OOD heads' sizes, dropout and augmentation range on the frozen
encoders of the best stage-1 model, scored by their mean validation AUROC (`val` against
`ood_val`). Every trial logs to TensorBoard with the HParams plugin (`tensorboard --logdir
RUN/tuning`); the best values are written as RUN/tuning/best.yaml, an experiment
`python -m tf_fusion.train --experiment RUN/tuning/best.yaml` trains as is. Run the same command
again to resume. See docs/tuning.md (search space, objectives, distributed chief/worker mode).
"""
from __future__ import annotations

from . import cli
from . import config as cfg
from .runs import default_dir
from .tuning.run import TUNERS, tune


def parse_args(argv=None):
    p = cli.parser("tf_fusion.tune", "KerasTuner search of an experiment's loss weights and learning rate, then of "
                   "its OOD heads; the best values become an experiment file (docs/tuning.md).",
                   "python -m tf_fusion.tune --experiment demo --tuner bayesian --max-trials 8")
    cli.add_experiment_flags(p)
    p.add_argument("--tuner", choices=TUNERS, help="sets tuning.tuner (default random)")
    p.add_argument("--max-trials", type=int, help="sets tuning.max_trials: trials per stage")
    return p.parse_args(argv)


def overrides_of(args) -> list[str]:
    """The --set list with --data, --tuner and --max-trials added as the keys they set."""
    out = cli.overrides(args)
    if args.tuner:
        out.append(f"tuning.tuner={args.tuner}")
    if args.max_trials is not None:
        out.append(f"tuning.max_trials={args.max_trials}")
    return out


def _print(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        config = cfg.load_experiment(args.experiment, overrides_of(args))
        tune(config, args.run_dir or default_dir(config), args.experiment, log=_print)

    return cli.run(run)


if __name__ == "__main__":
    raise SystemExit(main())
