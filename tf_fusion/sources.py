"""Where an experiment's TFRecords come from: a builder output folder, or the synthetic archive.

`data.dir` names a `tfrecords_builder build` output. Experiments with `data.synthetic.enabled`
(demo, smoke) instead get a synthetic archive in the real layout, written and built once into
`data.cache_dir` by the builder itself (`tfrecords_builder.ensure_synthetic_build`, which names
the cache by everything that shapes it); both steps resume if interrupted.
"""
from __future__ import annotations

import os

from tfrecords_builder import Manifest, Partition, ensure_synthetic_build, load_manifest

from .config import ConfigError


def prepare_data(config: dict, log=print) -> Manifest:
    """The checked manifest of this experiment's data, building the synthetic archive if needed."""
    data = config["data"]
    partition = Partition.from_json(data["partition"])
    if data["dir"]:
        return load_manifest(data["dir"], partition=partition)
    syn = data["synthetic"]
    if not syn["enabled"]:
        raise ConfigError(f"experiment {config['name']!r} has no data: pass --data DIR (a tfrecords_builder build)")
    out = ensure_synthetic_build(os.path.expanduser(data["cache_dir"]), syn["layout"], syn["pairs"], syn["seed"],
                                 partition=partition, workers=syn["workers"], log=log, regions=syn["regions"],
                                 holdout_countries=tuple(syn["holdout_countries"]), world=syn["world"])
    return load_manifest(out, partition=partition)
