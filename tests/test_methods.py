"""The comparison's methods as a registry (`tf_fusion.methods`): everything derives from it, it
imports no TensorFlow, the old `model.kind: late_fusion` still loads as the same training, and
one registry entry is enough for a new baseline to be trained, evaluated and reported by a study."""
import subprocess
import sys
import warnings

import pytest

from tf_fusion import config as cfg
from tf_fusion import methods, protocol
from tf_fusion.passes import PASSES


def test_the_columns_derive_from_the_registry_and_the_passes():
    names = [m.name for m in methods.METHODS]
    assert names == ["early_fusion", "late_fusion", "embracenet", "isd", "ensemble", "optical_only", "sar_only",
                     "non_adaptive", "adaptive", "adaptive_paper_heads"]
    assert protocol.METHODS is methods.METHODS and protocol.BASELINES is methods.BASELINES
    assert {p.method for p in PASSES} <= set(names) and set(methods.GATED_METHODS) == {"adaptive", *(p.method for p in PASSES)}
    assert cfg.RULES["model.kind"] == ("gated", "early_fusion", "embracenet", "isd", "ensemble")
    assert cfg.DEFAULTS["study.baselines".split(".")[0]]["baselines"] == methods.BASELINES
    assert set(cfg.DEFAULTS["training"]["pass_weights"]) == {p.name for p in PASSES}
    for name in methods.BASELINES:  # each experiment file trains the baseline it is named for
        b = methods.BASELINE_BY_NAME[name]
        assert methods.run_method(cfg.load_experiment(b.experiment)) == name
        assert methods.run_method(cfg.load_experiment("demo", list(b.study_overrides))) == name
    assert methods.run_method(cfg.load_experiment("paper")) is None


def test_the_registry_imports_no_tensorflow():
    code = ("import sys; from tf_fusion import methods, config, protocol, report, study; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print(len(methods.METHODS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(len(methods.METHODS))


def test_late_fusion_as_model_kind_loads_as_gated_with_one_note(tmp_path):
    """An old run folder's config.yaml (model.kind: late_fusion) loads as `gated` and is the same
    training as the renamed experiment (so the run is not refused as a different config)."""
    from tf_fusion.runs import training_identity

    old = tmp_path / "config.yaml"
    old.write_text("base: paper\nmodel:\n  kind: late_fusion\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = cfg.load_experiment(str(old))
    notes = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert config["model"]["kind"] == "gated" and notes == ["model.kind: late_fusion is deprecated; read as gated"]
    config["name"] = "paper"
    assert training_identity(config) == training_identity(cfg.load_experiment("paper"))
    with pytest.raises(cfg.ConfigError, match="^study.baselines must be a list of early_fusion, late_fusion"):
        cfg.load_experiment("demo", ["study.baselines=[attention]"])


@pytest.mark.slow
def test_one_registry_entry_is_enough_for_a_new_baseline(smoke_cache, tmp_path):
    """A toy baseline (the pooled bands of both modalities through one Dense), defined here
    alone — a model class and a registry entry — is trained, evaluated beside the gated network
    and reported by a study: nothing else in the tree names it."""
    import json

    import keras
    from keras import layers

    from smoke import smoke_overrides
    from tf_fusion import study
    from tf_fusion.baselines import SinglePassModel
    from tf_fusion.model import Gate, model_inputs, probabilities

    @keras.saving.register_keras_serializable(package="test_methods")
    class ToyModel(SinglePassModel):
        _config_args = ("num_classes", "image_size", "s2_channels", "s1_channels")

        def __init__(self, num_classes=12, image_size=120, s2_channels=12, s1_channels=2, backbone=None,
                     dropout=0.0, **kwargs):
            inputs = model_inputs(image_size, s2_channels, s1_channels)
            pooled = [Gate()([layers.GlobalAveragePooling2D()(inputs[k]), inputs[lam]])
                      for k, lam in (("s2", "lambda_opt"), ("s1", "lambda_sar"))]
            logits = layers.Dense(num_classes, dtype="float32", name="logits")(layers.Concatenate()(pooled))
            super().__init__(inputs=inputs, outputs={"probabilities": probabilities(logits)}, **kwargs)
            self._keep_config(locals())
            self._init_metrics(num_classes)

    @methods.register
    class Toy(methods.Baseline):
        name, label, order = "toy", "Toy Pooled Bands", 60
        model_kind, factory = "toy", ToyModel
        study_overrides = ("model.kind=toy",)
        sees_availability = True

    try:
        folder = tmp_path / "study"
        args = ["--experiment", "smoke", "--dir", str(folder), "--seeds", "1", "--stages", "5",
                "--set", "study.baselines=[toy]", "--set", "training.epochs=1", "--set", "training.steps_per_epoch=2",
                "--set", "evaluation.additive_noise=[]", "--set", "evaluation.temperature_scaling=false",
                "--set", "ood.detector=max_logit", *smoke_overrides(smoke_cache)]
        assert study.main(args) == 0
        from tf_fusion.runs import Run

        toy = Run(folder / "runs" / "toy-seed0")  # the run trained the toy's own model
        assert methods.run_method(toy.config) == "toy" and type(toy.load_model()) is ToyModel
    finally:
        methods.unregister("toy")
    assert (folder / "runs" / "toy-seed0" / "summary.json").exists()
    results = json.loads((folder / "report" / "results.json").read_text())
    assert "toy-seed0" in results["runs"] and set(results["methods"]["toy"]) >= {"clear", "missing_optical",
                                                                                "corrupted_sar"}
    table = (folder / "report" / "table2.md").read_text()
    assert any(line.startswith("|") and "Toy Pooled Bands" in line for line in table.splitlines())


def test_the_docs_table_lists_every_baseline_as_registered():
    """docs/methods.md's table has one row per baseline with its model.kind, its treatment of a
    missing and a corrupted modality and its experiment, as the registry says."""
    import os

    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "methods.md")
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-1]]
            for line in open(docs, encoding="utf-8") if line.startswith("| `")}
    for name in methods.BASELINES:
        b = methods.BASELINE_BY_NAME[name]
        kind, missing, corrupted, experiment = rows[name]
        assert kind.startswith(b.model_kind) and (missing, corrupted) == (b.missing, b.corrupted), name
        assert experiment == f"`{b.experiment}`", name
