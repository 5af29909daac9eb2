"""Shared fixtures: the real BigEarthNet samples in ../shared and small synthetic archives.

Real-data tests skip when ../shared/bigearthnet is absent, unless REQUIRE_SHARED_DATA=1 (set by
.ci/run), in which case they fail: CI can never skip them silently.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import subprocess
import sys
import tarfile
from types import SimpleNamespace

import pytest

pytest_plugins = ("smoke",)  # the session's smoke build and run, for the Keras side

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("BIGEARTHNET_SHARED", os.path.join(os.path.dirname(REPO), "shared", "bigearthnet"))


def shared_path(*parts) -> str:
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{path} is missing and REQUIRE_SHARED_DATA=1")
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def real_examples(tmp_path_factory):
    """The 6 real v1 pairs, extracted: (s2_root, s1_root, [s2 names], {s2: s1})."""
    out = tmp_path_factory.mktemp("real")
    for name in ("BigEarthNet-S2-Example.tar.bz2", "BigEarthNet-S1-Example.tar.bz2"):
        with tarfile.open(shared_path("examples", name)) as tar:
            tar.extractall(out, filter="data")
    s2_root, s1_root = out / "BigEarthNet-S2-Example", out / "BigEarthNet-S1-Example"
    import json

    pairs = {}
    for s1 in sorted(os.listdir(s1_root)):
        with open(s1_root / s1 / f"{s1}_labels_metadata.json") as f:
            pairs[json.load(f)["corresponding_s2_patch"]] = s1
    return str(s2_root), str(s1_root), sorted(os.listdir(s2_root)), pairs


def run_cli(*args, check=True) -> SimpleNamespace:
    """`python -m tfrecords_builder ARGS` run in this process (`cli.main`): returncode, stdout, stderr."""
    from tfrecords_builder import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    proc = SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cli_process(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m tfrecords_builder ARGS` in a fresh process, as a user would run it (slow tests)."""
    proc = subprocess.run([sys.executable, "-m", "tfrecords_builder", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run_module(*args, check=True) -> subprocess.CompletedProcess:
    """`python -m ARGS` in a fresh process from the repository root."""
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


SYNTH_PAIRS = 48  # pairs in each of the session's synthetic archives


@pytest.fixture(scope="session")
def synth_v1(tmp_path_factory):
    from tfrecords_builder.synth import write_archive

    out = tmp_path_factory.mktemp("synth") / "v1"
    return write_archive(str(out), "v1", SYNTH_PAIRS, seed=3)


@pytest.fixture(scope="session")
def synth_v2(tmp_path_factory):
    from tfrecords_builder.synth import write_archive

    out = tmp_path_factory.mktemp("synth") / "v2"
    return write_archive(str(out), "v2", SYNTH_PAIRS, seed=4)


@pytest.fixture(scope="session")
def small_shards(synth_v1, tmp_path_factory):
    """The session's synthetic v1 archive built with 1.2 MB shards (several per subset)."""
    out = tmp_path_factory.mktemp("small-shards") / "tfrecords"
    run_cli("build", *source_flags(synth_v1), "--out", out, "--shard-size-mb", 1.2, "--quiet")
    return out


def source_flags(info, **override) -> list[str]:
    """build/plan flags of a synthetic archive; override Source fields, e.g. train=PATH, root=None."""
    import dataclasses

    return dataclasses.replace(info.source(), **override).flags()


# --------------------------------------------------------------------------- the protocol, independently
# The seed paper's protocol as README.md states it, from synth.json alone: in-distribution 2-13,
# OOD-train 0-1, OOD-test 14-18; splits → train/val/test and the OOD subsets; cloud/snow/very-cloudy
# sources keep in-distribution patches only; held-out countries only in region_shift(_ood).
ID, OOD_TRAIN, OOD_TEST = set(range(2, 14)), {0, 1}, set(range(14, 19))
ROUTES = {("train", "in_distribution"): "train", ("val", "in_distribution"): "val", ("test", "in_distribution"): "test",
          ("train", "ood_train"): "ood_train", ("val", "ood_train"): "ood_val", ("test", "ood_test"): "ood_test",
          ("cloudy", "in_distribution"): "cloudy", ("snow", "in_distribution"): "snow",
          ("very_cloudy", "in_distribution"): "very_cloudy"}


def label_group(labels):
    labels = set(labels)
    if not labels:
        return "no_19_class_label"
    for name, members in (("in_distribution", ID), ("ood_train", OOD_TRAIN), ("ood_test", OOD_TEST)):
        if labels <= members:
            return name
    return "mixed_labels"


def _sources(pair):
    """The lists / metadata sources a synthetic pair is on, as its layout writes them."""
    kind = pair["kind"]
    if kind in ("cloudy", "very_cloudy", "snow"):  # v1: the lists; v2: the extra parquet's flags
        return ["snow"] if kind == "snow" else ["cloudy"] + (["very_cloudy"] if kind == "very_cloudy" else [])
    return [pair["split"]]


def expected(info, held_out=()):
    """(subset → set of s2 names, dropped reason → count) of a synthetic archive, from synth.json."""
    subsets, dropped = collections.defaultdict(set), collections.Counter()
    for pair in info["pairs"]:
        group = label_group(pair["labels"])
        for source in _sources(pair):
            if pair.get("country") in held_out:
                region = {"in_distribution": "region_shift", "ood_test": "region_shift_ood"}.get(group)
                if source in ("train", "val", "test") and region:
                    subsets[region].add(pair["s2_name"])
                else:
                    dropped[f"held_out_{group}" if source in ("train", "val", "test") else f"held_out_in_{source}"] += 1
                continue
            subset = ROUTES.get((source, group))
            if subset:
                subsets[subset].add(pair["s2_name"])
            elif group in ("no_19_class_label", "mixed_labels"):
                dropped[group] += 1
            else:
                dropped[f"{group}_in_{source}"] += 1
    return subsets, dict(dropped)


def count_branch_calls(monkeypatch, fusion) -> dict:
    """{"opt", "sar", "head"}: how often the branches and the fusion head of ``fusion`` run from
    now on (eager calls, or traces in a tf.function), counted by wrapping each layer's ``call``;
    the head by its classifier (the final Dense, ``logits``), which runs once per head call
    whichever model wraps the head's layers (``FusionModel.head_features``)."""
    from tf_fusion.model import CLASSIFIER

    calls = {"opt": 0, "sar": 0, "head": 0}
    for key, layer in (("opt", fusion.encoder_opt), ("sar", fusion.encoder_sar),
                       ("head", fusion.fusion_head.get_layer(CLASSIFIER))):
        def counting(*args, _key=key, _call=layer.call, **kwargs):
            calls[_key] += 1
            return _call(*args, **kwargs)

        monkeypatch.setattr(layer, "call", counting)
    return calls
