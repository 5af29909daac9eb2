"""`python -m tf_fusion.study`: the plan of runs, one command per run, a 2-seed study whose table
shows mean ± std, and a rerun that trains nothing again."""
import json
import os

import numpy as np
import pytest

from smoke import smoke_overrides

SMALL = ["--seeds", "2", "--stages", "5", "--set", "study.baselines=[late_fusion]", "--set", "training.epochs=1",
         "--set", "training.steps_per_epoch=2", "--set", "ood.epochs=1", "--set", "evaluation.additive_noise=[]",
         "--set", "evaluation.temperature_scaling=false",
         "--set", "ood.detector=max_logit"]  # a post-hoc p, fitted in the evaluation's pass: no heads to train


def test_plan_has_every_method_seed_and_stage():
    from tf_fusion import config as cfg
    from tf_fusion.study import plan

    config = cfg.load_experiment("demo_study", ["study.seeds=2"])
    runs = plan(config)
    names = {r.name for r in runs}
    assert names == {f"gated-stage{k}-seed{s}" for k in range(1, 6) for s in (0, 1)} | {
        f"{b}-seed{s}" for b in ("early_fusion", "late_fusion", "embracenet", "isd", "ensemble") for s in (0, 1)}
    late = next(r for r in runs if r.name == "late_fusion-seed1")
    assert "model.fusion_stage=5" in late.overrides and "training.seed=1" in late.overrides and "data.seed=1" in late.overrides
    # each run's config is what its listed command trains, and trains the method it is named for
    from tf_fusion.protocol import run_method
    from tf_fusion.study import Study

    study = Study("demo_study", "/tmp/x", ["study.seeds=2"])
    assert run_method(study.run_config(late)) == "late_fusion"
    for name in ("embracenet", "isd", "ensemble"):
        assert run_method(study.run_config(next(r for r in runs if r.name == f"{name}-seed0"))) == name
    assert run_method(study.run_config(next(r for r in runs if r.name == "gated-stage3-seed0"))) is None


def test_list_prints_one_command_per_step(capsys):
    from tf_fusion import study

    assert study.main(["--experiment", "demo_study", "--dir", "S", "--seeds", "2", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    trains = [line for line in lines if line.startswith("python -m tf_fusion.train")]
    assert len(trains) == 2 * (5 + 5) and all("--run-dir S/runs/" in line for line in trains)
    evaluations = [line for line in lines if line.startswith("python -m tf_fusion.evaluate")]
    assert len(evaluations) == 2 + 2 * 4  # each seed's comparison, and the other stages alone
    assert "--baseline embracenet=S/runs/embracenet-seed0" in evaluations[0]
    assert lines[-1].endswith("--collect")


@pytest.mark.slow
def test_a_two_seed_study_reports_mean_and_std_and_skips_finished_runs(smoke_cache, tmp_path, capsys):
    from tf_fusion import study

    folder = tmp_path / "study"
    args = ["--experiment", "smoke", "--dir", str(folder), *SMALL, *smoke_overrides(smoke_cache)]
    assert study.main(args) == 0
    table = (folder / "report" / "table2.md").read_text()
    assert "±" in table and "over 2 runs" in table and "Late Fusion" in table
    assert (folder / "report" / "table3.md").exists() and (folder / "report" / "table1.md").exists()
    for name in ("gated-stage5-seed0", "late_fusion-seed1"):
        assert (folder / "runs" / name / "summary.json").exists()
    assert (folder / "runs" / "gated-stage5-seed1" / "report" / "predictions.npz").exists()
    _check_mean_and_std(folder)
    mtimes = {p: os.stat(p).st_mtime_ns for p in folder.glob("runs/*/final.keras")}
    capsys.readouterr()
    assert study.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("nothing to do") == 4 and out.count("already evaluated") == 2
    assert {p: os.stat(p).st_mtime_ns for p in folder.glob("runs/*/final.keras")} == mtimes


def _check_mean_and_std(folder):
    """Every F1 (samples) and entropy cell of the study's results.json is the mean and sample
    std (ddof 1) of the two seed runs' own report/results.json, recomputed here; the seeds differ,
    so some std is above 0."""
    study = json.loads((folder / "report" / "results.json").read_text())
    seeds = [json.loads((folder / "runs" / f"gated-stage5-seed{k}" / "report" / "results.json").read_text())
             for k in (0, 1)]
    checked, spread = 0, 0
    for method, per_scenario in seeds[0]["methods"].items():
        for scenario, metrics in per_scenario.items():
            for metric in ("f1_samples", "avg_entropy"):
                values = [s["methods"][method][scenario].get(metric) for s in seeds]
                if any(v is None for v in values):
                    continue
                cell = study["methods"][method][scenario][metric]
                assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12), (method, scenario, metric)
                assert cell["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), (method, scenario, metric)
                checked, spread = checked + 1, spread + (cell["std"] > 0)
    assert checked >= 20 and spread > 0 and study["n_seeds"] == 2
    stage = study["stages"]["stage_5"]["clear"]["f1_samples"]
    values = [s["methods"]["adaptive"]["clear"]["f1_samples"] for s in seeds]
    assert stage == {"mean": pytest.approx(np.mean(values)), "std": pytest.approx(np.std(values, ddof=1))}
