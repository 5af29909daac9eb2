"""Experiments: YAML + base chain + --set overrides; every unknown name or key is a clear error."""
import pytest

from tf_fusion import config as cfg


def test_shipped_experiments_resolve():
    paper = cfg.load_experiment("paper")
    assert paper["model"]["backbone"] == "resnet50" and paper["training"]["epochs"] == 100
    assert paper["training"]["pass_weights"] == {"fuse": 2.0, "opt": 1.0, "sar": 1.0}
    base = cfg.load_experiment("paper_baseline")
    assert base["model"]["backbone"] == "resnet50"  # inherited from paper
    assert base["training"]["pass_weights"] == {"fuse": 1.0, "opt": 0.0, "sar": 0.0}
    assert cfg.load_experiment("paper_early_fusion")["model"]["kind"] == "early_fusion"
    smoke = cfg.load_experiment("smoke")
    assert smoke["name"] == "smoke" and smoke["model"]["backbone"] == "tiny"  # from demo
    assert smoke["data"]["synthetic"]["enabled"] is True


def test_overrides_parse_as_yaml_and_are_type_checked():
    c = cfg.load_experiment("smoke", ["training.epochs=7", "training.learning_rate=1", "data.dir=/x",
                                      "training.pass_weights.opt=0", "training.mixed_precision=mixed_bfloat16"])
    assert c["training"]["epochs"] == 7
    assert c["training"]["learning_rate"] == 1.0 and isinstance(c["training"]["learning_rate"], float)
    assert c["data"]["dir"] == "/x" and c["training"]["pass_weights"]["opt"] == 0.0
    with pytest.raises(cfg.ConfigError, match=r"unknown key 'training.epoch' \(did you mean 'epochs'\?\)"):
        cfg.load_experiment("smoke", ["training.epoch=2"])
    with pytest.raises(cfg.ConfigError, match="training.epochs must be of type int, got 'two'"):
        cfg.load_experiment("smoke", ["training.epochs=two"])
    with pytest.raises(cfg.ConfigError, match="data.augment must be true or false"):
        cfg.load_experiment("smoke", ["data.augment=3"])
    with pytest.raises(cfg.ConfigError, match="--set expects key=value, got 'training.epochs'"):
        cfg.load_experiment("smoke", ["training.epochs"])


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(cfg.ConfigError, match=r"unknown experiment 'nope'; known: .*demo.*paper.*smoke"):
        cfg.load_experiment("nope")


def test_yaml_file_with_typo_and_base_chain(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: smoke\nmodel:\n  backbon: tiny\n")
    with pytest.raises(cfg.ConfigError, match=r"unknown key 'model.backbon' \(did you mean 'backbone'\?\)"):
        cfg.load_experiment(str(bad))
    good = tmp_path / "mine.yaml"
    good.write_text("base: smoke\ntraining:\n  epochs: 1\n")
    c = cfg.load_experiment(str(good))
    assert c["name"] == "mine" and c["training"]["epochs"] == 1 and c["data"]["synthetic"]["pairs"] == 400
    # a resolved config, written as a run writes it, reads back unchanged through the same loader
    from tf_fusion.atomic import write_yaml

    write_yaml(str(tmp_path / "out.yaml"), c)
    assert cfg.load_experiment(str(tmp_path / "out.yaml")) == c


@pytest.mark.parametrize("override, message", [
    ("training.epochs=-3", "training.epochs must be an integer >= 1, got -3"),
    ("training.epochs=0", "training.epochs must be an integer >= 1, got 0"),
    ("training.learning_rate=-1", "training.learning_rate must be a number > 0, got -1.0"),
    ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
    ("data.image_size=0", "data.image_size must be an integer >= 8, got 0"),
    ("model.dropout=1.0", r"model.dropout must be a number in \[0, 1\), got 1.0"),
    ("training.optimizer=adagrad", "training.optimizer must be 'adam' or 'adamw' or 'sgd', got 'adagrad'"),
    ("training.steps_per_epoch=0", "training.steps_per_epoch must be null or an integer >= 1, got 0"),
    ("evaluation.threshold=1.0", r"evaluation.threshold must be a number in \(0, 1\), got 1.0"),
    ("training.pass_weights={fuse: 0, opt: 0, sar: 0}", "training.pass_weights must not all be 0"),
    ("ood.hidden=[64, 0]", r"ood.hidden must be a list of positive layer sizes, got \[64, 0\]"),
    ("training.learning_rate=.nan", "training.learning_rate must be a number > 0, got nan"),
])
def test_every_setting_is_checked_against_its_range(override, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load_experiment("smoke", [override])


def test_shipped_experiments_are_within_the_ranges():
    import glob
    import os

    for path in glob.glob(os.path.join(cfg.EXPERIMENTS_DIR, "*.yaml")):
        cfg.validate(cfg.load_experiment(path))
