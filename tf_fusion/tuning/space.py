"""The search space: the experiment's `tuning.fusion` and `tuning.ood` sections, checked before
any trial runs, declared as KerasTuner hyperparameters, and written back into config keys.

Every hyperparameter is a mapping of `values`, `min`, `max`, `step`, `sampling`:
- `values: [a, b, ...]` searches those values (one value: fixed, still logged with the trials);
- `min`/`max` searches the range (`step`: grid spacing, a factor under log sampling;
  `sampling`: linear | log | reverse_log); integer hyperparameters take integer bounds;
- all three null: not searched, the experiment's own value is used.
The names are fixed (below) because each one maps to a known config key; a typo is refused by
the config loader with a suggestion.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..config import ConfigError
from ..methods import GATED
from ..passes import PASSES

SAMPLINGS = ("linear", "log", "reverse_log")


@dataclass(frozen=True)
class Param:
    """One tunable setting: its YAML key, its KerasTuner/TensorBoard name and its legal values."""

    key: str
    hp_name: str
    integer: bool
    lo: float  # smallest legal value
    lo_open: bool = False  # lo itself excluded
    hi: float | None = None
    hi_open: bool = False

    def legal(self, v) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def bounds_text(self) -> str:
        left = f"{'(' if self.lo_open else '['}{self.lo:g}"
        right = "inf)" if self.hi is None else f"{self.hi:g}{')' if self.hi_open else ']'}"
        return f"{left}, {right}"


PARAMS = {
    "fusion": {p.key: p for p in (
        *(Param(p.weight_key, p.weight_key, False, 0.0) for p in PASSES),
        Param("learning_rate", "learning_rate", False, 0.0, lo_open=True),
    )},
    "ood": {p.key: p for p in (
        Param("hidden_1", "ood_hidden_1", True, 1),
        Param("hidden_2", "ood_hidden_2", True, 0),  # 0: heads with one hidden layer
        Param("dropout", "ood_dropout", False, 0.0, hi=1.0, hi_open=True),
        Param("augment_lo", "ood_augment_lo", False, 0.0, lo_open=True),
        Param("augment_hi", "ood_augment_hi", False, 0.0, lo_open=True),
        Param("sar_db_lo", "ood_sar_db_lo", False, float("-inf"), lo_open=True),
        Param("sar_db_hi", "ood_sar_db_hi", False, float("-inf"), lo_open=True),
    )},
}
# (lower key, upper key, the `ood` range they fill): the OOD samples' intensity augmentation
RANGES = (("augment_lo", "augment_hi", "augment_range"), ("sar_db_lo", "sar_db_hi", "sar_augment_db"))
STAGES = tuple(PARAMS)


# ------------------------------------------------------------------------------ experiment values
def experiment_value(config: dict, key: str):
    """The value the experiment itself gives a tunable setting (None when it has none)."""
    t, o = config["training"], config["ood"]
    hidden, augment, sar = list(o["hidden"] or []), o["augment_range"], o["sar_augment_db"]
    return {
        **{p.weight_key: t["pass_weights"][p.name] for p in PASSES},
        "learning_rate": t["learning_rate"],
        "hidden_1": hidden[0] if hidden else None,
        "hidden_2": hidden[1] if len(hidden) > 1 else 0,
        "dropout": o["dropout"],
        "augment_lo": augment[0] if augment else None,
        "augment_hi": augment[1] if augment else None,
        "sar_db_lo": sar[0] if sar else None,
        "sar_db_hi": sar[1] if sar else None,
    }[key]


def _kind(spec: dict) -> str | None:
    """"values", "range" or None (not searched)."""
    if spec.get("values") is not None:
        return "values"
    if spec.get("min") is not None or spec.get("max") is not None:
        return "range"
    return None


def searched(config: dict, stage: str, key: str) -> bool:
    return _kind(config["tuning"][stage][key]) is not None


# ------------------------------------------------------------------------------ checks
def _is_number(v, integer: bool) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float))


def _check_spec(where: str, spec: dict, p: Param) -> None:
    values, lo, hi, step, sampling = (spec.get(k) for k in ("values", "min", "max", "step", "sampling"))
    what = "integers" if p.integer else "numbers"
    if values is not None and (lo is not None or hi is not None):
        raise ConfigError(f"{where}: give either values or min/max, got values={values!r} and min={lo!r}, "
                          f"max={hi!r} (set the other to null)")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values must be a non-empty list, got {values!r}")
        for v in values:
            if not _is_number(v, p.integer) or not p.legal(v):
                raise ConfigError(f"{where}.values must be {what} in {p.bounds_text()}, got {values!r}")
        return
    if lo is None and hi is None:
        return
    if lo is None or hi is None:
        raise ConfigError(f"{where}: a range needs both min and max, got min={lo!r}, max={hi!r}")
    for name, v in (("min", lo), ("max", hi)):
        if not _is_number(v, p.integer) or not p.legal(v):
            raise ConfigError(f"{where}.{name} must be one of the {what} in {p.bounds_text()}, got {v!r}")
    if lo > hi:
        raise ConfigError(f"{where}: min {lo!r} > max {hi!r}")
    if sampling not in (None, *SAMPLINGS):
        raise ConfigError(f"{where}.sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if sampling in ("log", "reverse_log") and not lo > 0:
        raise ConfigError(f"{where}: {sampling} sampling needs min > 0, got min={lo!r}")
    if step is not None:
        if not _is_number(step, p.integer) or step <= 0:
            raise ConfigError(f"{where}.step must be a positive {'integer' if p.integer else 'number'} or null, "
                              f"got {step!r}")
        if sampling in ("log", "reverse_log") and step <= 1:
            raise ConfigError(f"{where}.step is a factor under {sampling} sampling and must be > 1, got {step!r}")


def _span(config: dict, stage: str, key: str):
    """(smallest, largest) value a trial can give `key`, or None if neither it nor the experiment sets it."""
    spec = config["tuning"][stage][key]
    kind = _kind(spec)
    if kind == "values":
        return min(spec["values"]), max(spec["values"])
    if kind == "range":
        return spec["min"], spec["max"]
    v = experiment_value(config, key)
    return None if v is None else (v, v)


def check(config: dict) -> None:
    """Refuse a search space that would fail inside a trial; every message names the key and
    echoes what was received."""
    tuning = config["tuning"]
    for stage in STAGES:
        section = tuning[stage]
        if not isinstance(section, dict):
            raise ConfigError(f"tuning.{stage} must be a mapping of hyperparameters, got {section!r}")
        for key, spec in section.items():
            if key not in PARAMS[stage]:
                raise ConfigError(f"unknown hyperparameter tuning.{stage}.{key}; known: {', '.join(PARAMS[stage])}")
            if not isinstance(spec, dict):
                raise ConfigError(f"tuning.{stage}.{key} must be a mapping (values, min, max, step, sampling), "
                                  f"got {spec!r}")
            _check_spec(f"tuning.{stage}.{key}", spec, PARAMS[stage][key])
    if config["model"]["kind"] != GATED:
        raise ConfigError(f"tuning searches the pass weights of the gated network (model.kind {GATED}); "
                          f"model.kind is {config['model']['kind']!r}")
    spans = [_span(config, "fusion", p.weight_key) for p in PASSES]
    if all(s is not None and s[0] == 0 for s in spans):
        raise ConfigError(f"tuning.fusion: {', '.join(p.weight_key for p in PASSES)} can all be 0 in one trial; "
                          f"their smallest values are {[s[0] for s in spans]}")
    for lo_key, hi_key, range_key in RANGES:
        lo, hi = _span(config, "ood", lo_key), _span(config, "ood", hi_key)
        if (lo is None) != (hi is None):
            missing = lo_key if lo is None else hi_key
            raise ConfigError(f"tuning.ood.{missing}: not searched and the experiment has no ood.{range_key} "
                              f"({config['ood'][range_key]!r}) to take it from; give values or min/max")
        if lo is not None and lo[1] > hi[0]:
            raise ConfigError(f"tuning.ood: {lo_key} can reach {lo[1]!r} but {hi_key} can be as low as "
                              f"{hi[0]!r}; every {lo_key} must be <= every {hi_key}")
    hidden = config["ood"]["hidden"] or []
    sized = [k for k in ("hidden_1", "hidden_2") if searched(config, "ood", k)]
    if sized and len(hidden) > 2:
        raise ConfigError(f"tuning.ood.{sized[0]}: hidden_1/hidden_2 size two-layer heads, the experiment's "
                          f"ood.hidden has {len(hidden)} layers ({hidden!r})")
    if sized and _span(config, "ood", "hidden_1") is None:
        raise ConfigError(f"tuning.ood.hidden_1: not searched and the experiment's ood.hidden is {hidden!r}")


# ------------------------------------------------------------------------------ KerasTuner
def declare(hp, stage: str, config: dict) -> dict:
    """Register the stage's hyperparameters on `hp` (called from `HyperModel.build`, so every
    hyperparameter is defined there) and return the trial's values by YAML key."""
    out = {}
    for key, spec in config["tuning"][stage].items():
        p = PARAMS[stage][key]
        kind = _kind(spec)
        cast = int if p.integer else float
        if kind == "values":
            values = [cast(v) for v in spec["values"]]
            out[key] = hp.Fixed(p.hp_name, values[0]) if len(values) == 1 else hp.Choice(p.hp_name, values)
        elif kind == "range":
            step = None if spec["step"] is None else cast(spec["step"])
            make = hp.Int if p.integer else hp.Float
            out[key] = make(p.hp_name, cast(spec["min"]), cast(spec["max"]), step=step,
                            sampling=spec["sampling"] or "linear")
    return out


def from_hp_values(stage: str, hp_values: dict) -> dict:
    """KerasTuner's {hp_name: value} (a trial's hyperparameters.values) → {YAML key: value}."""
    return {p.key: hp_values[p.hp_name] for p in PARAMS[stage].values() if p.hp_name in hp_values}


def apply(config: dict, stage: str, values: dict) -> dict:
    """A copy of `config` with a trial's values ({YAML key: value}) written into their keys."""
    c = copy.deepcopy(config)
    if stage == "fusion":
        t = c["training"]
        for p in PASSES:
            if p.weight_key in values:
                t["pass_weights"][p.name] = float(values[p.weight_key])
        if "learning_rate" in values:
            t["learning_rate"] = float(values["learning_rate"])
        return c
    o = c["ood"]
    if "hidden_1" in values or "hidden_2" in values:
        h1 = int(values.get("hidden_1", experiment_value(config, "hidden_1")))
        h2 = int(values.get("hidden_2", experiment_value(config, "hidden_2")))
        o["hidden"] = [h1] + ([h2] if h2 else [])
    if "dropout" in values:
        o["dropout"] = float(values["dropout"])
    for lo_key, hi_key, range_key in RANGES:
        if lo_key in values or hi_key in values:
            o[range_key] = [float(values.get(k, experiment_value(config, k))) for k in (lo_key, hi_key)]
    return c


def describe(values: dict) -> str:
    """'w_fuse=2 w_opt=0.531 ...' for progress lines."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
