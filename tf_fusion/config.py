"""Experiments as data: defaults here, YAML files in `experiments/`, `--set key=value` overrides.

An experiment file holds only what differs from `DEFAULTS` (it may name a `base:` experiment to
start from). Every key is checked: a typo is an error that names the key and suggests the closest
known one, never a silently ignored setting, and every value against its valid range (`RULES`)
before anything is written. The resolved config is written into the run folder and read back
through `load_experiment`, the same loader.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os

import yaml

from tfrecords_builder import DEFAULT_PARTITION

from . import detector_registry, gate, methods
from .methods import GATED
from .passes import FUSED, PASSES, default_weights

EXPERIMENTS_DIR = os.environ.get(
    "TF_FUSION_EXPERIMENTS", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
)

DEFAULTS = {
    "name": "",
    "description": "",
    "data": {
        "dir": None,  # a tfrecords_builder output folder; None: build the synthetic archive below
        # with enabled: true and no dir, the builder's synthetic archive is written and built once
        # regions: synthetic countries with their own climates (0: none); holdout_countries: region shift;
        # world: another synthetic world (signatures, clouds, speckle; 0: the generator's own)
        "synthetic": {"enabled": False, "layout": "v1", "pairs": 1200, "seed": 0, "workers": 2, "regions": 0,
                      "holdout_countries": [], "world": 0},
        "cache_dir": os.path.join("~", ".cache", "tf_fusion"),
        "image_size": 120,
        "resize_method": "bilinear",
        "batch_size": 32,
        "shuffle_buffer": 2048,
        "augment": True,
        "deterministic": False,
        "verify": False,  # sha256 of every shard before reading (always: each exists with its recorded size)
        "seed": 0,
        # the manifest must have been built with this partition (0-based 19-class indices)
        "partition": DEFAULT_PARTITION.to_json(),
    },
    "model": {
        # gated: the paper's gated two-branch network (trained on the fused pass only it is the
        # late-fusion baseline); else a baseline's model (tf_fusion.methods: early_fusion, embracenet,
        # isd, ensemble); the old name late_fusion is read as gated
        "kind": GATED,
        "backbone": "resnet50",
        "fusion_stage": 5,  # fuse after ResNet stage 1…5 (5: the pooled embeddings; the extension uses 4)
        "dropout": 0.0,
        "embracenet": {"width": 512, "modality_dropout": 0.5},  # docking width; share of batches keeping one modality
        # input sensor dropout: each modality zeroed and flagged 0 with this probability per training
        # sample, never both (so at most 0.5); fused_pass: also the gated network's fused pass (its
        # gates drawn so per sample in Eq. 2's fused term), a setting of model.kind gated
        "isd": {"dropout": 0.25, "fused_pass": False},
    },
    "training": {
        "epochs": 100,
        "steps_per_epoch": None,  # None: one pass over the train subset
        "optimizer": "adam",  # adam | adamw | sgd
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "lr_schedule": "constant",  # constant | cosine
        "pass_weights": default_weights(),  # Eq. 2, one per row of PASSES; only the fused one: the late-fusion baseline
        "monitor": "val_f1_samples",
        "monitor_mode": "max",
        "mixed_precision": None,  # None | mixed_float16 | mixed_bfloat16
        "distribute": None,  # None | mirrored
        "seed": 0,
    },
    "ood": {
        # one head per modality on its frozen branch embedding: hidden layers, sigmoid = P(in-distribution)
        "hidden": [512, 64],
        "dropout": 0.5,
        "epochs": 5,  # the paper: 5
        "batch_size": 64,
        "learning_rate": 1e-3,
        "augment_range": [0.5, 1.5],  # OOD samples: optical input rescaled by U(lo, hi) in reflectance units
        # OOD samples: SAR backscatter shifted by U(lo, hi) dB (the paper gives no range; this one
        # makes dark water scenes out-of-distribution for the SAR head too); null: not shifted
        "sar_augment_db": [-15.0, 5.0],
        "balance": True,  # weight in- and out-of-distribution samples equally
        "seed": 0,  # the heads' initialisation and sampling; also the post-hoc detectors' training subsample
        # the gate: which detector gives p_o, p_s in Eq. 3 (tf_fusion.gate; names from
        # tf_fusion.detector_registry): binary_head (the heads above, the paper's), or a post-hoc
        # score needing no OOD data: confidence, max_logit, joint_energy, mahalanobis,
        # mahalanobis_class, knn, mahalanobis_normalized, vim, scale; or a combination
        # ([a, b] or "a+b": p = the smallest, the modality is out when any says so); or
        # {optical: ..., sar: ...}. Post-hoc scores become p through a calibrator (logistic:
        # monotone, smooth; or isotonic) fitted on val against calibrate_on: ood_val (the
        # OOD-training classes), corruptions (generic corruptions of val, tf_fusion.shifts) or both
        # the default gate holds on every synthetic world the project was not tuned on (README,
        # "Which gate"): the paper's heads and the class-conditional Mahalanobis distance together
        "detector": "binary_head+mahalanobis_class",
        "calibration": "logistic",
        "calibrate_on": "ood_val+corruptions",
        "knn_k": 10,  # knn: the score is the distance to the k-th nearest training embedding
        "knn_reference": 2000,  # knn: at most this many training embeddings (seeded), a constant of the graph
    },
    "evaluation": {
        "batch_size": 64,
        "threshold": 0.5,
        "ece_bins": 15,
        # extra scenarios beyond the authors' protocol: Gaussian noise of these stds (in units of the
        # band std) added to one normalised input; [] for none
        "additive_noise": [1.0],
        "seed": 0,
        # fit one temperature T of the fusion classifier's logits on val (minimum BCE); the table
        # then shows ece_scaled, the ECE of sigmoid(logit / T), beside ece
        "temperature_scaling": False,
        "after_training": False,  # train: go on with the baseline, OOD detectors and the evaluation table
        "baseline_experiment": None,  # trained next to the run as a baseline column of the table
    },
    "study": {
        # `python -m tf_fusion.study`: every method for `seeds` seeds (training.seed = data.seed = 0 … seeds − 1)
        # and the gated network at each of `stages`; the methods' comparison uses model.fusion_stage
        "seeds": 5,
        "stages": [1, 2, 3, 4, 5],
        "baselines": list(methods.BASELINES),  # tf_fusion.methods' baselines
    },
    "tuning": {
        # `python -m tf_fusion.tune` (docs/tuning.md): stage 1 the fusion network, stage 2 the OOD heads
        "tuner": "random",  # random | bayesian | hyperband
        "max_trials": 10,  # per stage (random, bayesian; hyperband sizes its brackets from `epochs`)
        "ood_max_trials": None,  # stage 2; None: max_trials; 0: stage 1 only
        # stage 1: val_robust_f1 (mean val samples-F1 of the fused, optical-only and SAR-only passes)
        # or any validation metric the model logs (val_f1_samples, val_opt_f1_macro, ...)
        "objective": "val_robust_f1",
        "epochs": None,  # per fusion trial (hyperband: the most); None: training.epochs
        "steps_per_epoch": None,  # None: training.steps_per_epoch
        "executions_per_trial": 1,
        "hyperband_factor": 3,
        "seed": 0,
        # each hyperparameter: `values` (a list; one element: fixed) or `min`/`max` (with `step`,
        # `sampling` linear|log|reverse_log); all three null: not searched, the experiment's value
        "fusion": {
            # the fused pass's weight fixed at its default, the others searched (one key per row of PASSES)
            **{p.weight_key: ({"values": [p.weight], "min": None, "max": None, "step": None, "sampling": "linear"}
                              if p is FUSED else
                              {"values": None, "min": 0.25, "max": 4.0, "step": None, "sampling": "log"})
               for p in PASSES},
            "learning_rate": {"values": None, "min": 3e-4, "max": 1e-2, "step": None, "sampling": "log"},
        },
        "ood": {
            "hidden_1": {"values": [128, 256, 512, 1024], "min": None, "max": None, "step": None, "sampling": "linear"},
            "hidden_2": {"values": [0, 32, 64, 128], "min": None, "max": None, "step": None, "sampling": "linear"},
            "dropout": {"values": None, "min": 0.0, "max": 0.6, "step": 0.1, "sampling": "linear"},
            "augment_lo": {"values": None, "min": 0.3, "max": 0.9, "step": None, "sampling": "linear"},
            "augment_hi": {"values": None, "min": 1.1, "max": 2.0, "step": None, "sampling": "linear"},
            "sar_db_lo": {"values": None, "min": -20.0, "max": -5.0, "step": None, "sampling": "linear"},
            "sar_db_hi": {"values": None, "min": 0.0, "max": 8.0, "step": None, "sampling": "linear"},
        },
    },
}

class ConfigError(ValueError):
    """An unknown experiment, key or value, or an unusable run or data folder; the message names it."""


def experiment_path(name: str) -> str:
    """`demo` → experiments/demo.yaml; a path to a .yaml file is used as is."""
    if name.endswith((".yaml", ".yml")) and os.path.exists(name):
        return name
    path = os.path.join(EXPERIMENTS_DIR, f"{name}.yaml")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(EXPERIMENTS_DIR) if f.endswith(".yaml")) if os.path.isdir(EXPERIMENTS_DIR) else []
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(known) or 'none'} (in {EXPERIMENTS_DIR})")
    return path


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Deep-merge `update` into a copy of `base`, refusing keys `base` does not have."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown key {where!r}{_suggest(key, base)}")
        if isinstance(base[key], dict) and key != "partition":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        elif where in _ANY_SHAPE:
            out[key] = value
        else:
            out[key] = _check_type(where, base[key], value)
    return out


_ANY_SHAPE = {"ood.detector"}  # a name, a list or a mapping: checked whole in `validate`


def _check_type(where: str, default, value):
    if default is None or value is None:
        return value
    if isinstance(default, bool) != isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if type(default) is not type(value) and not (isinstance(default, dict) and isinstance(value, dict)):
        raise ConfigError(f"{where} must be of type {type(default).__name__}, got {value!r}")
    return value


def _read_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment must be a mapping of sections")
    return data


def _resolve_file(path: str, seen=()) -> dict:
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        config = copy.deepcopy(DEFAULTS)
    else:
        base_path = experiment_path(base)
        if base_path in seen:
            raise ConfigError(f"{path}: circular 'base' chain through {base_path}")
        config = _resolve_file(base_path, seen + (path,))
    return _merge(config, data)


def parse_override(text: str) -> tuple[list[str], object]:
    """'training.epochs=2' → (['training', 'epochs'], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(config: dict, overrides) -> dict:
    for text in overrides or ():
        keys, value = parse_override(text)
        update = value
        for key in reversed(keys):
            update = {key: update}
        config = _merge(config, update)
    return config


def load_experiment(name: str, overrides=()) -> dict:
    """The resolved experiment: DEFAULTS ← base chain ← the YAML file ← `overrides`, checked
    against `RULES`. A run's `config.yaml` is read back through here too."""
    path = experiment_path(name)
    config = apply_overrides(_resolve_file(path), overrides)
    if not config["name"]:
        config["name"] = os.path.splitext(os.path.basename(path))[0]
    methods.normalize_kind(config)  # before anything compares it: an old run folder is the same training
    validate(config)
    return config


# ------------------------------------------------------------------------------------ ranges
@dataclasses.dataclass(frozen=True)
class Range:
    """A number in [lo, hi] (an open end excludes the bound; None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def holds(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.integer and not isinstance(v, int)):
            return False
        if not math.isfinite(v):
            return False
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def __str__(self) -> str:
        what = "an integer" if self.integer else "a number"
        if self.hi is None:
            return f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE_INT, COUNT, POSITIVE, NON_NEGATIVE = Range(1, integer=True), Range(0, integer=True), Range(0, lo_open=True), Range(0)
FRACTION = Range(0, 1, hi_open=True)
# Every numeric or enumerated setting and what it may be (None: also allowed where listed).
RULES = {
    "data.synthetic.pairs": Range(20, integer=True),
    "data.synthetic.seed": COUNT,
    "data.synthetic.workers": POSITIVE_INT,
    "data.synthetic.layout": ("v1", "v2"),
    "data.synthetic.regions": Range(0, 10, integer=True),
    "data.synthetic.world": COUNT,
    "data.image_size": Range(8, integer=True),
    "data.resize_method": ("bilinear", "nearest", "bicubic", "area"),
    "data.batch_size": POSITIVE_INT,
    "data.shuffle_buffer": COUNT,
    "data.seed": COUNT,
    "model.kind": methods.model_kinds(),  # validate reads the registry again (a kind registered later)
    "model.backbone": ("resnet50", "resnet18", "tiny"),
    "model.fusion_stage": Range(1, 5, integer=True),
    "model.dropout": FRACTION,
    "model.embracenet.width": POSITIVE_INT,
    "model.embracenet.modality_dropout": Range(0, 1),
    "model.isd.dropout": Range(0, 0.5),
    "training.epochs": POSITIVE_INT,
    "training.steps_per_epoch": (None, POSITIVE_INT),
    "training.optimizer": ("adam", "adamw", "sgd"),
    "training.learning_rate": POSITIVE,
    "training.weight_decay": NON_NEGATIVE,
    "training.lr_schedule": ("constant", "cosine"),
    **{f"training.pass_weights.{p.name}": NON_NEGATIVE for p in PASSES},
    "training.monitor_mode": ("max", "min"),
    "training.mixed_precision": (None, "mixed_float16", "mixed_bfloat16"),
    "training.distribute": (None, "mirrored"),
    "training.seed": COUNT,
    "ood.dropout": FRACTION,
    "ood.epochs": POSITIVE_INT,
    "ood.batch_size": POSITIVE_INT,
    "ood.learning_rate": POSITIVE,
    "ood.seed": COUNT,
    # the detector registry's names (tf_fusion.detector_registry imports no TensorFlow); ood.detector,
    # a name, a combination or one per modality, is checked by tf_fusion.gate.parse in `validate`
    "ood.calibration": detector_registry.CALIBRATION_NAMES,
    "ood.calibrate_on": detector_registry.CALIBRATE_ON,
    "ood.knn_k": POSITIVE_INT,
    "ood.knn_reference": POSITIVE_INT,
    "evaluation.batch_size": POSITIVE_INT,
    "evaluation.threshold": Range(0, 1, lo_open=True, hi_open=True),
    "evaluation.ece_bins": POSITIVE_INT,
    "study.seeds": POSITIVE_INT,
    "evaluation.seed": COUNT,
}


def _at(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def _allowed(rule, value) -> bool:
    options = rule if isinstance(rule, tuple) else (rule,)
    return any(o.holds(value) if isinstance(o, Range) else value == o for o in options)


def _describe(rule) -> str:
    options = rule if isinstance(rule, tuple) else (rule,)
    return " or ".join("null" if o is None else str(o) if isinstance(o, Range) else repr(o) for o in options)


def validate(config: dict) -> None:
    """Every value against `RULES`, and the settings that only make sense together; one
    ConfigError line naming the key, what it must be and what it got."""
    for key, rule in {**RULES, "model.kind": methods.model_kinds()}.items():
        value = _at(config, key)
        if not _allowed(rule, value):
            raise ConfigError(f"{key} must be {_describe(rule)}, got {value!r}")
    weights = config["training"]["pass_weights"]
    if not sum(weights.values()) > 0:
        raise ConfigError(f"training.pass_weights must not all be 0, got {weights}")
    for key, positive in (("ood.augment_range", True), ("ood.sar_augment_db", False)):
        bounds = _at(config, key)
        if bounds is None:
            continue
        ok = (isinstance(bounds, list) and len(bounds) == 2 and all(Range().holds(b) for b in bounds)
              and bounds[0] <= bounds[1] and (not positive or bounds[0] > 0))
        if not ok:
            raise ConfigError(f"{key} must be null or [lo, hi] with {'0 < ' if positive else ''}lo <= hi, got {bounds!r}")
    noise = config["evaluation"]["additive_noise"]
    if not isinstance(noise, list) or not all(POSITIVE.holds(v) for v in noise):
        raise ConfigError(f"evaluation.additive_noise must be a list of positive stds, got {noise!r}")
    stages = config["study"]["stages"]
    if not isinstance(stages, list) or not stages or not all(Range(1, 5, integer=True).holds(k) for k in stages):
        raise ConfigError(f"study.stages must be a non-empty list of fusion stages 1…5, got {stages!r}")
    baselines = config["study"]["baselines"]
    if not isinstance(baselines, list) or not set(baselines) <= set(methods.BASELINES):
        raise ConfigError(f"study.baselines must be a list of {', '.join(methods.BASELINES)}; got {baselines!r}")
    o = config["ood"]
    try:
        gate.parse(o["detector"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if o["knn_reference"] < o["knn_k"]:
        raise ConfigError(f"ood.knn_reference must be >= ood.knn_k ({o['knn_k']}), got {o['knn_reference']}")
    hidden = config["ood"]["hidden"]
    if not isinstance(hidden, list) or not all(POSITIVE_INT.holds(h) for h in hidden):
        raise ConfigError(f"ood.hidden must be a list of positive layer sizes, got {hidden!r}")
    try:
        from tfrecords_builder import Partition

        Partition.from_json(config["data"]["partition"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"data.partition is not a class partition ({e})") from None
