"""`python -m tf_fusion.study`: the authors' full comparison with one command.

For an experiment of the gated network (`paper_study`, `demo_study`), a study trains, for each of
`study.seeds` seeds (training.seed = data.seed = 0 … N − 1):

- the gated network at every fusion stage of `study.stages` (the extension's Table 1);
- the baselines of `study.baselines` (`tf_fusion.methods`: early fusion, late fusion — the gated
  network at stage 5 trained on the fused pass only —, EmbraceNet, input sensor dropout, the
  single-modality ensemble), each with its registry entry's `study_overrides`, beside the gated
  network at the experiment's `model.fusion_stage` (Tables 2 and 3);

evaluates each seed's comparison (`tf_fusion.evaluate`, predictions.npz in every run's report/)
and writes STUDY/report/: table1.md (stages), table2.md (methods × scenarios), table3.md
(separation from the clear test set), each with the extension's figures beside ours,
results.json (mean ± std over seeds, in evaluate's shape, plus the stages), and plots.

Every run lives in STUDY/runs/<name>/ and is skipped when finished, so rerunning the command
continues a killed study; one study command at a time uses a study folder (STUDY/.lock, see
`tf_fusion.runs.using`); `--list` prints one command per run for a cluster scheduler, and
`--collect` builds the report from whatever runs and evaluations exist.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex

from . import atomic, cli, scores
from . import config as cfg
from .methods import BASELINE_BY_NAME, run_method
from .runs import REPORT, RUNS_DIR, Run, using

STUDY_DIR = "studies"


@dataclasses.dataclass(frozen=True)
class StudyRun:
    name: str  # folder name under STUDY/runs
    method: str  # "gated" or a baseline name
    seed: int
    stage: int | None  # the fusion stage of a gated run
    overrides: tuple  # --set values on top of the experiment's


def plan(config: dict) -> list[StudyRun]:
    """The runs of a study, in the order they are trained."""
    st = config["study"]
    stages = sorted(set(st["stages"]) | {config["model"]["fusion_stage"]})
    runs = []
    for seed in range(st["seeds"]):
        common = (f"training.seed={seed}", f"data.seed={seed}", "evaluation.after_training=false")
        for stage in stages:
            runs.append(StudyRun(f"gated-stage{stage}-seed{seed}", "gated", seed, stage,
                                 (*common, f"model.fusion_stage={stage}")))
        for name in st["baselines"]:
            runs.append(StudyRun(f"{name}-seed{seed}", name, seed, None, (*common, *BASELINE_BY_NAME[name].study_overrides)))
    return runs


class Study:
    """A study folder: STUDY/runs/<run>/ and STUDY/report/."""

    def __init__(self, experiment: str, path: str, overrides=()):
        self.experiment, self.path, self.overrides = experiment, os.fspath(path), list(overrides)
        self.config = cfg.load_experiment(experiment, self.overrides)
        self.runs = plan(self.config)
        self.stage = self.config["model"]["fusion_stage"]

    def run_dir(self, run: StudyRun) -> str:
        return os.path.join(self.path, RUNS_DIR, run.name)

    def run_config(self, run: StudyRun) -> dict:
        """The run's config: the experiment with the study's and the run's overrides (exactly what
        the run's `--list` command trains)."""
        return cfg.load_experiment(self.experiment, [*self.overrides, *run.overrides])

    def comparisons(self) -> list[tuple[StudyRun, dict]]:
        """(the gated run at the comparison stage, {baseline name: its run}) per seed."""
        out = []
        for seed in range(self.config["study"]["seeds"]):
            gated = next(r for r in self.runs if r.method == "gated" and r.seed == seed and r.stage == self.stage)
            out.append((gated, {r.method: r for r in self.runs if r.seed == seed and r.method != "gated"}))
        return out

    # ------------------------------------------------------------------------------ commands
    def commands(self) -> list[str]:
        """One shell command per step: every training, every evaluation, then --collect."""
        sets = "".join(f" --set {shlex.quote(o)}" for o in self.overrides)
        exp = shlex.quote(self.experiment)
        lines = [f"python -m tf_fusion.train --experiment {exp} --run-dir {shlex.quote(self.run_dir(r))}{sets}"
                 + "".join(f" --set {shlex.quote(o)}" for o in r.overrides) for r in self.runs]
        for gated, baselines in self.comparisons():
            lines.append(f"python -m tf_fusion.evaluate --run {shlex.quote(self.run_dir(gated))}"
                         + "".join(f" --baseline {name}={shlex.quote(self.run_dir(r))}" for name, r in baselines.items()))
        lines += [f"python -m tf_fusion.evaluate --run {shlex.quote(self.run_dir(r))}"
                  for r in self.runs if r.method == "gated" and r.stage != self.stage]
        lines.append(f"python -m tf_fusion.study --experiment {exp} --dir {shlex.quote(self.path)}{sets} --collect")
        return lines

    # ------------------------------------------------------------------------------ running
    def train_all(self, log=print) -> None:
        from .trainer import train

        for i, run in enumerate(self.runs, 1):
            log(f"[{i}/{len(self.runs)}] {run.name}")
            train(self.run_config(run), self.run_dir(run), log)

    def evaluate_all(self, log=print) -> None:
        from .evaluate import evaluate

        for gated, baselines in self.comparisons():
            wanted = {name: os.path.abspath(self.run_dir(r)) for name, r in baselines.items()}
            if self._evaluated(gated, wanted):
                log(f"{gated.name}: already evaluated beside {', '.join(wanted)}")
                continue
            evaluate(self.run_dir(gated), [f"{name}={path}" for name, path in wanted.items()], log=log)
        for run in self.runs:
            if run.method == "gated" and run.stage != self.stage and not self._evaluated(run, {}):
                evaluate(self.run_dir(run), log=log)

    def _evaluated(self, run: StudyRun, baselines: dict) -> bool:
        results = self._results(run)
        return results is not None and results.get("baselines", {}) == baselines

    def _results(self, run: StudyRun) -> dict | None:
        path = os.path.join(self.run_dir(run), REPORT, "results.json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    # ------------------------------------------------------------------------------ the report
    def collect(self, log=print) -> dict:
        """STUDY/report/ from the evaluations that exist; returns its results.json content."""
        from .plots import plot_method_bars, plot_stages
        from .report import SEPARATION, STAGE_METRICS, render_markdown, render_table

        per_seed = [r for r in (self._results(g) for g, _ in self.comparisons()) if r is not None]
        stages = {}
        for stage in sorted({r.stage for r in self.runs if r.method == "gated"}):
            found = [self._results(r) for r in self.runs if r.method == "gated" and r.stage == stage]
            found = [{"methods": {f"stage_{stage}": res["methods"]["adaptive"]}} for res in found if res is not None]
            if found:
                stages[f"stage_{stage}"] = scores.aggregate_seeds(found)["methods"][f"stage_{stage}"]
        if not per_seed and not stages:
            raise cfg.ConfigError(f"{self.path}: no evaluated run yet; run the study first (or its --list commands)")
        results = {**(scores.aggregate_seeds(per_seed) if per_seed else {"methods": {}, "n_seeds": 0}),
                   "stages": stages, "fusion_stage": self.stage, "experiment": self.config["name"],
                   "runs": {r.name: os.path.abspath(self.run_dir(r)) for r in self.runs if Run(self.run_dir(r)).finished}}
        out = os.path.join(self.path, REPORT)
        atomic.write_json(os.path.join(out, "results.json"), results)
        n = results["n_seeds"]
        title = f"{self.config['name']}: {n} seed{'s' * (n != 1)}, the gated methods fusing after stage {self.stage}"
        atomic.write_text(os.path.join(out, "table2.md"), render_markdown(results, f"Table 2 — {title}"))
        atomic.write_text(os.path.join(out, "table3.md"),
                          f"# Table 3 — separation from the clear test set ({title})\n\n"
                          + render_table(results, metrics=SEPARATION))
        if stages:
            atomic.write_text(os.path.join(out, "table1.md"),
                              f"# Table 1 — adaptive fusion after each ResNet stage ({self.config['name']})\n\n"
                              + render_table({"methods": stages}, metrics=STAGE_METRICS, columns=list(stages)))
            plot_stages(stages, os.path.join(out, "stages.png"))
        if per_seed:
            plot_method_bars(results, os.path.join(out, "methods.png"))
        log(f"wrote {out}/: table1.md, table2.md, table3.md, results.json and plots ({n} seeds, {len(stages)} stages)")
        return results


def main(argv=None) -> int:
    p = cli.parser("tf_fusion.study", "Train every method of the authors' comparison for several seeds and the "
                   "adaptive method at each fusion stage, evaluate them and write the extension's Tables 1–3.",
                   "python -m tf_fusion.study --experiment demo_study",
                   "python -m tf_fusion.study --experiment paper_study --data bigearthnet-tfrecords --list")
    p.add_argument("--experiment", required=True, help="the gated network's experiment (demo_study, paper_study, ...)")
    p.add_argument("--data", help="tfrecords_builder output folder (sets data.dir)")
    p.add_argument("--dir", help=f"study folder (default {STUDY_DIR}/<experiment name>)")
    p.add_argument("--seeds", type=int, help="sets study.seeds")
    p.add_argument("--stages", help="sets study.stages, e.g. 1,2,3,4,5")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="print one command per run (for a cluster scheduler) and stop")
    what.add_argument("--collect", action="store_true", help="only build the report from the runs that exist")
    args = p.parse_args(argv)
    overrides = cli.overrides(args)
    if args.seeds is not None:
        overrides.append(f"study.seeds={args.seeds}")
    if args.stages:
        overrides.append(f"study.stages=[{args.stages}]")

    def job():
        config = cfg.load_experiment(args.experiment, overrides)
        if run_method(config) is not None:
            raise cfg.ConfigError(f"{args.experiment} trains {run_method(config)}; a study starts from the gated network")
        study = Study(args.experiment, args.dir or os.path.join(STUDY_DIR, config["name"]), overrides)
        if args.list:
            print("\n".join(study.commands()))
            return
        with using(study.path, _print):  # one study command at a time in the folder (each run has its own lock)
            if not args.collect:
                study.train_all(_print)
                study.evaluate_all(_print)
            study.collect(_print)

    return cli.run(job)


def _print(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
