"""Experiments: YAML + base chain + --set overrides; every unknown name or key is a clear error."""
import json

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
    assert c["name"] == "mine" and c["training"]["epochs"] == 1 and c["data"]["synthetic"]["pairs"] == 392
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


# ------------------------------------------------------------------------------------ every rule
# Settings that are free-form (names, paths) or checked as a whole elsewhere in `validate` (lists,
# the partition) rather than by a rule of RULES; every other setting must have a rule.
_FREE_FORM = {"name", "description", "data.dir", "data.cache_dir", "training.monitor", "evaluation.baseline_experiment"}
_ALSO = {"ood.knn_reference": ["ood.knn_k=1"]}  # a value of the rule is only valid beside these


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and key not in ("partition", "tuning"):
            yield from _leaves(value, f"{prefix}{key}.")
        elif key != "tuning":
            yield f"{prefix}{key}", value


def _examples(rule):
    """(values the rule must refuse, values it must accept), derived from the rule alone."""
    refused, accepted = [], []
    for option in rule if isinstance(rule, tuple) else (rule,):
        if isinstance(option, cfg.Range):
            step = 1 if option.integer else 0.5
            if option.lo is not None:
                refused.append(option.lo if option.lo_open else option.lo - step)
                accepted.append(option.lo + step if option.lo_open else option.lo)
            if option.hi is not None:
                refused.append(option.hi if option.hi_open else option.hi + step)
                accepted.append(option.hi - step if option.hi_open else option.hi)
            if option.integer:
                refused.append((option.lo or 0) + 1.5)
        else:
            accepted.append(option)
    if not any(isinstance(o, cfg.Range) for o in (rule if isinstance(rule, tuple) else (rule,))):
        refused.append("no-such-value")
    return refused, accepted


def test_every_numeric_or_enumerated_setting_has_a_rule():
    """A numeric setting (or one whose default is null) without a rule would take any value."""
    missing = [key for key, value in _leaves(cfg.DEFAULTS) if key not in cfg.RULES and key not in _FREE_FORM
               and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))]
    assert missing == []


@pytest.mark.parametrize("key", sorted(cfg.RULES))
def test_each_rule_refuses_what_is_outside_it_in_one_line_naming_the_key(key):
    """Generated from RULES itself, so a rule added later is tested without a new case: values
    just outside each bound (and a non-integer, a non-member) are refused in one line naming the
    key; the bounds themselves (and each member) are accepted."""
    refused, accepted = _examples(cfg.RULES[key])
    assert refused
    for value in refused:
        with pytest.raises(cfg.ConfigError) as e:
            cfg.load_experiment("smoke", [f"{key}={json.dumps(value)}", *_ALSO.get(key, [])])
        message = str(e.value)
        assert message.startswith(f"{key} must ") and "\n" not in message, message
    for value in accepted:
        config = cfg.load_experiment("smoke", [f"{key}={json.dumps(value)}", *_ALSO.get(key, [])])
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value
