"""`python -m tf_fusion.tune` on the smoke experiment: a 2+1-trial search, killed and resumed,
finishes, every trial is an HParams session in TensorBoard with all its hyperparameters, the best
values train as an experiment, a re-run resumes; a chief + 2 workers Hyperband search on loopback
runs each trial exactly once and continues the trials it promotes; bad search spaces are one-line
errors."""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
kt = pytest.importorskip("keras_tuner")

from conftest import REPO  # noqa: E402
from tf_fusion import config as cfg  # noqa: E402
from tf_fusion.tuning.run import check_tuning  # noqa: E402
from tf_fusion.tuning import space  # noqa: E402

FUSION_HPS = {"w_fuse", "w_opt", "w_sar", "learning_rate"}
OOD_HPS = {"ood_hidden_1", "ood_hidden_2", "ood_dropout", "ood_augment_lo", "ood_augment_hi", "ood_sar_db_lo",
           "ood_sar_db_hi"}
TINY = ["--set", "tuning.epochs=1", "--set", "tuning.steps_per_epoch=4", "--set", "ood.epochs=1"]


def _cmd(run_dir, cache, *extra):
    return [sys.executable, "-m", "tf_fusion.tune", "--experiment", "smoke", "--run-dir", str(run_dir),
            "--set", f"data.cache_dir={cache}", *TINY, *map(str, extra)]


def _jsonl(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


@pytest.fixture(scope="module")
def cache(smoke_cache, smoke_data):
    """The session's smoke build, reused by every search below."""
    return smoke_cache


def _tune(run_dir, cache, *extra):
    """`python -m tf_fusion.tune` run in this process: (exit status, stdout)."""
    import contextlib
    import io

    from tf_fusion import tune

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tune.main(_cmd(run_dir, cache, *extra)[3:])
    return code, out.getvalue()


SEARCH = ("--max-trials", 2, "--set", "tuning.ood_max_trials=1")  # 2 fusion trials, 1 OOD-head trial
ONE_SEARCH = pytest.mark.xdist_group("tune-search")  # the tests reading search_run share one worker, so one search


@pytest.fixture(scope="module")
def search_run(cache, tmp_path_factory):
    """A 2 + 1-trial search as a user may live it: `python -m tf_fusion.tune` killed (SIGKILL) as
    soon as its first fusion trial is recorded, then the same command again (in-process)."""
    run = tmp_path_factory.mktemp("tune") / "run"
    record = run / "tuning" / "fusion" / "trials-tuner0.jsonl"
    with open(run.parent / "killed.log", "w") as log:
        proc = subprocess.Popen(_cmd(run, cache, *SEARCH), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if record.exists() and _jsonl([record]):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
    at_kill = SimpleNamespace(trials=[r["trial_id"] for r in _jsonl([record])],
                              best_yaml=(run / "tuning" / "best.yaml").exists(),
                              stdout=(run.parent / "killed.log").read_text())
    code, out = _tune(run, cache, *SEARCH)  # the same command
    assert code == 0, out[-3000:]
    return run, SimpleNamespace(stdout=out, at_kill=at_kill)


# ------------------------------------------------------------------------------ a search
@pytest.mark.slow
@ONE_SEARCH
def test_search_finishes_with_progress_lines_and_best_files(search_run):
    run, proc = search_run
    assert "fusion trial 0 on tuner0:" in proc.at_kill.stdout  # before the kill
    for stage, trial in (("fusion", "1"), ("ood", "0")):
        assert f"{stage} trial {trial} on tuner0:" in proc.stdout
    assert proc.stdout.count(" done in ") == 2
    best = json.loads((run / "tuning" / "best.json").read_text())
    assert best["fusion"]["objective"] == "val_robust_f1" and 0 <= best["fusion"]["value"] <= 1
    assert best["ood"]["objective"] == "val_auroc" and 0 <= best["ood"]["value"] <= 1
    fusion_rows = _jsonl(glob.glob(str(run / "tuning" / "fusion" / "trials-*.jsonl")))
    assert sorted(r["trial_id"] for r in fusion_rows) == ["0", "1"]
    # the best trial's objective, recomputed from its checkpoint with scikit-learn: the mean
    # validation samples-F1 of the three passes (one epoch per trial, so its only value)
    from sklearn.metrics import f1_score

    from tf_fusion.data import make_dataset
    from tf_fusion.model import gate_inputs
    from tf_fusion.passes import PASSES
    from tf_fusion.sources import prepare_data
    from tf_fusion.task import Task

    search = cfg.load_experiment(str(run / "tuning" / "search.yaml"))
    manifest = prepare_data(search, log=lambda *_: None)
    config = space.apply(search, "fusion", space.from_hp_values("fusion", best["fusion"]["hyperparameters"]))
    model = Task(config, manifest).build_model()
    model.load_weights(run / "tuning" / "fusion" / f"trial_{best['fusion']['trial_id']}" / "checkpoint.weights.h5")
    batches = list(make_dataset(manifest, "val", batch_size=64, image_size=config["data"]["image_size"]))
    y = np.concatenate([b[1].numpy() for b in batches])
    f1 = [f1_score(y, np.concatenate([np.asarray(model(gate_inputs(x, p.lambda_opt, p.lambda_sar))["probabilities"])
                                      for x, _ in batches]) > 0.5, average="samples", zero_division=0)
          for p in PASSES]
    assert best["fusion"]["value"] == pytest.approx(np.mean(f1), abs=1e-5)


def _hparams_records(log_root):
    """The HParams plugin records under log_root: ({session folder: (group name, {hparam: value})},
    [(hparam names, metric tags) of each experiment summary])."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions, experiments = {}, []
    for path in glob.glob(os.path.join(log_root, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.WhichOneof("data") == "session_start_info":
                    info = data.session_start_info
                    hparams = {k: v.number_value for k, v in info.hparams.items()}
                    sessions[os.path.relpath(os.path.dirname(path), log_root)] = (info.group_name, hparams)
                elif data.WhichOneof("data") == "experiment":
                    experiments.append(({h.name for h in data.experiment.hparam_infos},
                                        {m.name.tag for m in data.experiment.metric_infos}))
    return sessions, experiments


def _scalars(folder, tag):
    values = []
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            values += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value if v.tag == tag]
    return values


@pytest.mark.slow
@ONE_SEARCH
def test_every_trial_is_an_hparams_session_with_every_hyperparameter(search_run):
    run, _ = search_run
    log_root = str(run / "tuning" / "logs")
    sessions, experiments = _hparams_records(log_root)
    # the table's columns: every hyperparameter of both stages and both objectives
    assert len(experiments) == 1
    assert experiments[0][0] == FUSION_HPS | OOD_HPS and {"epoch_robust_f1", "epoch_auroc"} <= experiments[0][1]
    fusion = {k: v for k, v in sessions.items() if k.startswith("fusion")}
    ood = {k: v for k, v in sessions.items() if k.startswith("ood")}
    assert len(fusion) == 2 and len(ood) == 1, sorted(sessions)
    for hps in [h for _, h in fusion.values()]:
        assert set(hps) == FUSION_HPS and hps["w_fuse"] == 2.0
    for hps in [h for _, h in ood.values()]:
        assert set(hps) == OOD_HPS
    groups = [g for g, _ in sessions.values()]
    assert len(set(groups)) == 3  # both stages number trials from 0: still separate rows
    # the objective of each trial is a scalar of its session, for the table and parallel coordinates
    for folder in fusion:
        assert len(_scalars(os.path.join(log_root, folder, "validation"), "epoch_robust_f1")) == 1
    for folder in ood:
        (auroc,) = _scalars(os.path.join(log_root, folder, "validation"), "epoch_auroc")
        assert 0 <= auroc <= 1


@pytest.mark.slow
@ONE_SEARCH
def test_best_yaml_trains_as_is(search_run, tmp_path):
    run, _ = search_run
    best_yaml = run / "tuning" / "best.yaml"
    best = json.loads((run / "tuning" / "best.json").read_text())
    from tf_fusion import train

    assert train.main(["--experiment", str(best_yaml), "--run-dir", str(tmp_path / "t"),
                       "--set", "training.epochs=1", "--set", "training.steps_per_epoch=2"]) == 0
    trained = cfg.yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    hp = best["fusion"]["hyperparameters"]
    assert trained["name"] == "smoke_tuned"
    assert trained["training"]["pass_weights"] == {"fuse": hp["w_fuse"], "opt": hp["w_opt"], "sar": hp["w_sar"]}
    assert trained["training"]["learning_rate"] == pytest.approx(hp["learning_rate"])
    ohp = best["ood"]["hyperparameters"]
    want_hidden = [ohp["ood_hidden_1"]] + ([ohp["ood_hidden_2"]] if ohp["ood_hidden_2"] else [])
    assert trained["ood"]["hidden"] == want_hidden
    assert trained["ood"]["augment_range"] == pytest.approx([ohp["ood_augment_lo"], ohp["ood_augment_hi"]])
    assert trained["ood"]["sar_augment_db"] == pytest.approx([ohp["ood_sar_db_lo"], ohp["ood_sar_db_hi"]])


@pytest.mark.slow
@ONE_SEARCH
def test_rerun_resumes_instead_of_starting_over(search_run, cache):
    run, _ = search_run
    rows = lambda: _jsonl(glob.glob(str(run / "tuning" / "**" / "trials-*.jsonl"), recursive=True))  # noqa: E731
    before = rows()
    code, out = _tune(run, cache, *SEARCH)
    assert code == 0 and "fusion: complete (2 trials)" in out and "ood: complete (1 trials)" in out
    assert rows() == before


@ONE_SEARCH
def test_another_search_in_the_same_folder_is_refused(search_run, cache, capsys):
    """Only the trial counts may change."""
    run, _ = search_run
    code, _ = _tune(run, cache, *SEARCH, "--set", "tuning.fusion.w_opt.max=2.0")
    assert code == 2
    assert "holds a search of a different config (tuning.fusion.w_opt.max: 4.0 then, 2.0 now)" in capsys.readouterr().err


@pytest.mark.slow
@ONE_SEARCH
def test_resume_after_kill_runs_each_trial_once(search_run):
    run, proc = search_run
    assert proc.at_kill.trials == ["0"] and not proc.at_kill.best_yaml
    assert "fusion: resuming, 1 trials already done" in proc.stdout
    rows = _jsonl([run / "tuning" / "fusion" / "trials-tuner0.jsonl"])
    assert sorted(r["trial_id"] for r in rows) == ["0", "1"]  # none twice, none lost
    assert (run / "tuning" / "best.yaml").exists()


# ------------------------------------------------------------------------------ distributed
def _free_port_pair() -> int:
    """A port P on 127.0.0.1 with P + 1 also free (the chief serves stage 2 on P + 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


@pytest.mark.slow
def test_chief_and_two_workers_run_hyperband_each_trial_exactly_once(cache, tmp_path):
    """A Hyperband search on loopback: each trial runs once on one of the workers, and a trial
    Hyperband promotes trains on from the checkpoint of the trial it continues (only its last
    epoch runs), whichever worker wrote that checkpoint."""
    run = tmp_path / "run"
    port = _free_port_pair()
    cmd = _cmd(run, cache, "--tuner", "hyperband", "--set", "tuning.epochs=2", "--set", "tuning.hyperband_factor=2",
               "--set", "tuning.ood_max_trials=1")
    # KerasTuner's chief, once a worker is told the stage is over, checks every 20 s whether the
    # others are done; that wait (twice here) is the chief's only role in what this test checks, so
    # its sleeps are capped at 0.5 s (the chief's command is otherwise the same)
    chief = [sys.executable, "-c", "import runpy, time; sleep = time.sleep; "
             "time.sleep = lambda s: sleep(min(s, 0.5)); runpy.run_module('tf_fusion.tune', run_name='__main__')",
             *cmd[3:]]
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port)}
        procs[tuner_id] = subprocess.Popen(chief if tuner_id == "chief" else cmd, cwd=REPO, env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = {}
    try:
        for tuner_id, proc in procs.items():
            outs[tuner_id] = proc.communicate(timeout=400)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, f"{tuner_id}:\n{outs.get(tuner_id, '')[-4000:]}"
    tuning = run / "tuning"
    # Hyperband (Li et al.) with R = 2 epochs and η = 2: bracket s = 1 runs 2 trials for 1 epoch and
    # promotes 1 to 2 epochs, bracket s = 0 runs 2 trials for 2 epochs — 5 fusion trials
    for stage, n in (("fusion", 5), ("ood", 1)):
        rows = _jsonl(glob.glob(str(tuning / stage / "**" / "trials-*.jsonl"), recursive=True))
        ids = [r["trial_id"] for r in rows]
        assert len(ids) == len(set(ids)) == n, (stage, rows)  # each trial once, across the workers
        assert set(ids) == {p.name[len("trial_"):] for p in (tuning / stage).glob("**/trial_*")}
        assert {r["tuner_id"] for r in rows} <= {"tuner0", "tuner1"}  # the chief only serves the oracle
        assert all(r["status"] == "COMPLETED" for r in rows)
    workers = outs["tuner0"] + outs["tuner1"]
    fusion_rows = _jsonl(glob.glob(str(tuning / "fusion" / "trials-*.jsonl")))
    continued = [r["trial_id"] for r in fusion_rows if r["hyperparameters"].get("tuner/initial_epoch")]
    assert len(continued) == 1  # trained on from the checkpoint of the trial it promotes
    assert f"fusion trial {continued[0]} epoch 2/2" in workers and f"fusion trial {continued[0]} epoch 1/2" not in workers
    assert "worker done" in outs["tuner0"] and "worker done" in outs["tuner1"]
    assert (tuning / "best.yaml").exists() and "best values:" in outs["chief"]


class _Scored(kt.HyperModel):
    """A one-layer model whose score is its hyperparameter x: KerasTuner's loop, no training."""

    def __init__(self):
        super().__init__()
        self.results, self.lines = [], []

    def start_trial(self, trial_id, trial_dir):
        self.results = []

    def log(self, message):
        self.lines.append(message)

    def build(self, hp):
        hp.Float("x", 0.0, 1.0)
        return tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)])

    def fit(self, hp, model, *args, **kwargs):
        self.results.append(hp.get("x"))
        return hp.get("x")


def test_a_worker_told_to_wait_asks_again_after_a_growing_wait(tmp_path, monkeypatch):
    """The oracle answers IDLE 7 times, then gives the search's one trial: the tuner waits
    0.05 s before its second request, doubling up to 1 s, and not at all once a trial ran."""
    from keras_tuner.engine import trial as kt_trial

    from tf_fusion.tuning import search

    tuning = {"tuner": "random", "seed": 0, "executions_per_trial": 1, "hyperband_factor": 3}
    tuner = search.make_tuner("fusion", _Scored(), "score", "max", tuning, str(tmp_path), "p", max_trials=1,
                              max_epochs=1)
    real, answers, waits = tuner.oracle.create_trial, [], []

    def create_trial(tuner_id):
        trial = kt_trial.Trial(tuner.oracle.get_space(), status="IDLE") if len(answers) < 7 else real(tuner_id)
        answers.append(str(getattr(trial.status, "value", trial.status)))
        return trial

    monkeypatch.setattr(tuner.oracle, "create_trial", create_trial)
    monkeypatch.setattr(search.time, "sleep", waits.append)
    tuner.search()
    assert answers == ["IDLE"] * 7 + ["RUNNING", "STOPPED"]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


# ------------------------------------------------------------------------------ the search space
def _config(*overrides):
    return cfg.load_experiment("smoke", list(overrides))


@pytest.mark.parametrize("override, message", [
    ("tuning.fusion.w_fsue.min=1", "unknown key 'tuning.fusion.w_fsue' (did you mean 'w_fuse'?)"),
    ("tuning.fusion.w_opt.min=5.0", "tuning.fusion.w_opt: min 5.0 > max 4.0"),
    ("tuning.fusion.w_fuse.min=1.0", "tuning.fusion.w_fuse: give either values or min/max, got values=[2.0] and "
                                     "min=1.0, max=None"),
    ("tuning.fusion.learning_rate.min=0.0", "tuning.fusion.learning_rate.min must be one of the numbers in (0, inf), "
                                            "got 0.0"),
    ("tuning.fusion.w_opt.min=0.0", "tuning.fusion.w_opt: log sampling needs min > 0, got min=0.0"),
    ("tuning.ood.hidden_1.values=[64.5, 128]", "tuning.ood.hidden_1.values must be integers in [1, inf), "
                                               "got [64.5, 128]"),
    ("tuning.ood.dropout.max=1.0", "tuning.ood.dropout.max must be one of the numbers in [0, 1), got 1.0"),
    ("tuning.ood.augment_lo.max=1.2", "augment_lo can reach 1.2 but augment_hi can be as low as 1.1"),
    ("tuning.ood.sar_db_lo.max=2.0", "sar_db_lo can reach 2.0 but sar_db_hi can be as low as 0.0"),
    ("tuning.fusion.w_sar.sampling=cubic", "tuning.fusion.w_sar.sampling must be one of linear, log, reverse_log, "
                                           "got 'cubic'"),
    ("tuning.objective=val_f1", "tuning.objective must be one of val_robust_f1,"),
    ("tuning.tuner=grid", "tuning.tuner must be one of random, bayesian, hyperband, got 'grid'"),
    ("tuning.max_trials=0", "tuning.max_trials must be an integer >= 1, got 0"),
    ("tuning.fusion.learning_rate.min=3e-4", "tuning.fusion.learning_rate.min must be of type float, got '3e-4'"),
])
def test_bad_search_space_is_a_one_line_error(override, message):
    with pytest.raises(cfg.ConfigError) as info:
        check_tuning(_config(override))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_echoes_a_bad_search_space(tmp_path, capsys):
    from tf_fusion import tune

    assert tune.main(["--experiment", "smoke", "--run-dir", str(tmp_path), "--set", "tuning.ood.hidden_2.values=[]"]) == 2
    assert capsys.readouterr().err.strip() == "error: tuning.ood.hidden_2.values must be a non-empty list, got []"


def test_declared_hyperparameters_and_their_config_keys():
    config = _config("tuning.ood.hidden_2.values=[0]", "tuning.fusion.learning_rate.min=null",
                     "tuning.fusion.learning_rate.max=null")
    check_tuning(config)
    hp = kt.HyperParameters()
    values = space.declare(hp, "fusion", config)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert kinds == {"w_fuse": "Fixed", "w_opt": "Float", "w_sar": "Float"}  # learning_rate: not searched
    assert [h.sampling for h in hp.space if h.name == "w_opt"] == ["log"]
    trial = space.apply(config, "fusion", {**values, "w_opt": 0.5})
    assert trial["training"]["pass_weights"] == {"fuse": 2.0, "opt": 0.5, "sar": values["w_sar"]}
    assert trial["training"]["learning_rate"] == config["training"]["learning_rate"]

    hp = kt.HyperParameters()
    space.declare(hp, "ood", config)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert kinds == {"ood_hidden_1": "Choice", "ood_hidden_2": "Fixed", "ood_dropout": "Float",
                     "ood_augment_lo": "Float", "ood_augment_hi": "Float", "ood_sar_db_lo": "Float",
                     "ood_sar_db_hi": "Float"}
    trial = space.apply(config, "ood", {"hidden_1": 256, "hidden_2": 0, "dropout": 0.2, "augment_lo": 0.4,
                                        "augment_hi": 1.7, "sar_db_hi": 3.0})
    assert trial["ood"]["hidden"] == [256] and trial["ood"]["augment_range"] == [0.4, 1.7]
    assert trial["ood"]["sar_augment_db"] == [config["ood"]["sar_augment_db"][0], 3.0]  # lo: the experiment's
    assert space.from_hp_values("ood", {"ood_hidden_1": 256, "tuner/epochs": 3}) == {"hidden_1": 256}


def test_keras_tuners_state_is_written_whole(tmp_path, monkeypatch):
    """A kill while KerasTuner saves its oracle or a trial (all its JSON state goes through
    `keras_tuner.src.utils.save_json`) leaves the previous file, never an empty one the resumed
    search cannot read. Simulated by an interruption after the new content is written and before
    it is published, once a tuner has been made as `tf_fusion.tune` makes it."""
    from keras_tuner.src import utils as kt_utils

    from tf_fusion import atomic
    from tf_fusion.tuning import search

    search.make_tuner("fusion", lambda hp: None, "val_loss", "min", {"tuner": "random", "seed": 0,
                      "executions_per_trial": 1}, str(tmp_path), "p", max_trials=1, max_epochs=1)
    path = tmp_path / "oracle.json"
    kt_utils.save_json(str(path), {"trials": {"0": "COMPLETED"}})
    before = path.read_text()

    def killed(tmp, target):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(atomic, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        kt_utils.save_json(str(path), {"trials": {"0": "COMPLETED", "1": "RUNNING"}})
    assert path.read_text() == before and json.loads(before) == {"trials": {"0": "COMPLETED"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oracle.json", "p"]  # no temporary left behind
