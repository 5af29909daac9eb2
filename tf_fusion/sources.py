"""Where an experiment's TFRecords come from: a builder output folder, or the synthetic archive.

`data.dir` names a `tfrecords_builder build` output. Experiments with `data.synthetic.enabled`
(demo, smoke) instead get a synthetic archive in the real layout, written and built once into
`data.cache_dir` with the builder itself; both steps resume if interrupted.
"""
from __future__ import annotations

import hashlib
import json
import os

from tfrecords_builder.records import MANIFEST
from tfrecords_builder.synth import GENERATOR_VERSION, ensure_build

from .config import DEFAULTS, ConfigError

DEFAULT_PARTITION = DEFAULTS["data"]["partition"]


def synthetic_root(config: dict) -> str:
    """Cache folder of an experiment's synthetic archive (shared by every run with the same settings)."""
    syn, part = config["data"]["synthetic"], config["data"]["partition"]
    tag = "" if part == DEFAULT_PARTITION else "-" + hashlib.sha1(json.dumps(part, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(os.path.expanduser(config["data"]["cache_dir"]),
                        f"synthetic-{syn['layout']}-{syn['pairs']}-seed{syn['seed']}-g{GENERATOR_VERSION}{tag}")


def prepare_data(config: dict, log=print) -> str:
    """The folder holding manifest.json for this experiment, building the synthetic one if needed."""
    data = config["data"]
    if data["dir"]:
        if not os.path.exists(os.path.join(data["dir"], MANIFEST)):
            raise ConfigError(f"data.dir {data['dir']}: no {MANIFEST} (run `python -m tfrecords_builder build ... --out DIR` first)")
        return data["dir"]
    if not data["synthetic"]["enabled"]:
        raise ConfigError(f"experiment {config['name']!r} has no data: pass --data DIR (a tfrecords_builder build)")
    syn, part = data["synthetic"], data["partition"]
    partition_flags = ["--in-distribution", ",".join(map(str, part["in_distribution"])),
                       "--ood-train", ",".join(map(str, part["ood_train"])), "--ood-test", ",".join(map(str, part["ood_test"]))]
    return ensure_build(synthetic_root(config), syn["layout"], syn["pairs"], syn["seed"], workers=syn["workers"],
                        extra_flags=partition_flags, log=log)
