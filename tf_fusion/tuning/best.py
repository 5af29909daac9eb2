"""The best values of a search as an experiment file that `python -m tf_fusion.train` takes as is:
`base: <the tuned experiment>` plus every key that differs from it (the `--set` overrides the
search ran with, and the tuned keys), named `<experiment>_tuned` so it trains into its own run."""
from __future__ import annotations

import os

from .. import atomic
from .. import config as cfg
from . import space

_NOT_CARRIED = ("name", "description", "tuning")


def config_diff(base: dict, final: dict, defaults: dict = cfg.DEFAULTS, top: bool = True) -> dict:
    """The keys of `final` that differ from `base`, nested as an experiment file holds them (a
    mapping the config loader merges key by key is diffed key by key; others are whole values)."""
    out = {}
    for key, value in final.items():
        if top and key in _NOT_CARRIED:
            continue
        old = base.get(key) if isinstance(base, dict) else None
        if isinstance(value, dict) and isinstance(defaults.get(key), dict) and key != "partition":
            sub = config_diff(old or {}, value, defaults[key], top=False)
            if sub:
                out[key] = sub
        elif value != old:
            out[key] = value
    return out


def base_reference(experiment: str) -> str:
    """How best.yaml names its base: a name from experiments/ as is, a file by its absolute path."""
    if experiment.endswith((".yaml", ".yml")) and os.path.exists(experiment):
        return os.path.abspath(experiment)
    return experiment


def best_config(config: dict, fusion_best: dict, ood_best: dict | None) -> dict:
    """`config` with the best trial values of both stages written into their keys."""
    out = space.apply(config, "fusion", space.from_hp_values("fusion", fusion_best["hyperparameters"]))
    if ood_best:
        out = space.apply(out, "ood", space.from_hp_values("ood", ood_best["hyperparameters"]))
    return out


def write_best_yaml(path: str, experiment: str, config: dict, fusion_best: dict, ood_best: dict | None) -> dict:
    """Write best.yaml and check that the config loader resolves it; returns the resolved config."""
    final = best_config(config, fusion_best, ood_best)
    base = cfg.load_experiment(experiment)
    lines = [f"fusion trial {fusion_best['trial_id']}: {fusion_best['objective']} {fusion_best['value']:.4f}"]
    if ood_best:
        lines.append(f"OOD trial {ood_best['trial_id']}: {ood_best['objective']} {ood_best['value']:.4f}")
    doc = {"base": base_reference(experiment), "name": f"{config['name']}_tuned",
           "description": f"{config['name']} with the best values of python -m tf_fusion.tune ({'; '.join(lines)})",
           **config_diff(base, final)}
    header = (f"# Best hyperparameters found by `python -m tf_fusion.tune --experiment {experiment}`\n"
              + "".join(f"# {line}\n" for line in lines)
              + f"# Train: python -m tf_fusion.train --experiment {path}\n")
    def save(tmp):
        atomic.write_yaml(tmp, doc, header)  # (a complete file under the staging name)
        cfg.load_experiment(tmp)  # it must load as is before it is published

    atomic.write_with(path, save, suffix=".yaml")
    return cfg.load_experiment(path)
