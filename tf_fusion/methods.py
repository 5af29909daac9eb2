"""The comparison's methods as a registry: one class per method, the one home of their names.

A method is a column of the comparison (results.json's key, the table's label and position).
The gated network's methods come from the table of passes (`tf_fusion.passes.PASSES`: one method
per gate setting) plus ``adaptive`` (Eq. 3); every baseline is one class here with ``@register``:
its name, label, column position, the ``model.kind`` its run trains and the model it builds
(``factory``, a dotted path imported when called), the overrides a study applies to it, whether
it sees the availability flags, how it treats a missing and a corrupted modality (the authors'
protocol) and its experiment file. Config ranges (`model.kind`, `study.baselines`), the Task's
model factory, the study's runs, the evaluation's flags, the report's columns and the README's
table derive from here. This module imports neither TensorFlow nor Keras.

Adding a baseline: one model class (e.g. in `tf_fusion.baselines`), one class here with
``@register``, one experiment file and its tests.

API::

    GATED (the paper's model.kind), ADAPTIVE, Method, Baseline, register(cls), unregister(name)
    METHODS (columns, in order; a live list), METHOD_BY_NAME, BASELINES (names, in order),
    BASELINE_BY_NAME, GATED_METHODS, model_kinds(), for_kind(kind), run_method(config),
    normalize_kind(config)
"""
from __future__ import annotations

import importlib
import warnings
from typing import ClassVar

from .passes import FUSED, PASSES, fused_only_weights

GATED = "gated"  # model.kind of the paper's gated two-branch network (formerly "late_fusion")
DEPRECATED_KINDS = {"late_fusion": GATED}
ADAPTIVE = "adaptive"
ADAPTIVE_PAPER = "adaptive_paper_heads"
OPTICAL, SAR = "optical", "sar"  # as in tf_fusion.protocol


class Method:
    """One column. ``order``: its position (lower first); ``modality``: a single-modality
    method, reported only where its modality is present."""

    name: ClassVar[str]
    label: ClassVar[str]
    order: ClassVar[float]
    modality: ClassVar[str | None] = None


class Baseline(Method):
    """A method of its own run, evaluated beside the gated network's.

    ``model_kind``: the `model.kind` its run trains; ``factory``: "module:Class" of its Keras
    model, called with the common arguments (backbone, num_classes, image_size, dropout) and
    ``model_kwargs(config)``; ``study_overrides``: the `--set` values a study adds to the
    experiment for its run; ``sees_availability``: evaluation feeds the scenario's availability
    flags as its λ inputs (else λ = 1: it sees the zeros of a missing modality); ``missing`` /
    ``corrupted``: what it does with a missing or a corrupted modality, in words (the README's
    table); ``experiment``: its experiment file in experiments/ (None: none of its own)."""

    model_kind: ClassVar[str]
    factory: ClassVar = None  # "module:Class" (imported when called: no TensorFlow here) or a callable
    study_overrides: ClassVar[tuple] = ()
    sees_availability: ClassVar[bool] = False
    missing: ClassVar[str] = "sees zeros"
    corrupted: ClassVar[str] = "sees the noise"
    experiment: ClassVar[str | None] = None

    @classmethod
    def trains(cls, config: dict) -> bool:
        """Does ``config`` train this baseline?"""
        return cls.model_kind != GATED and config["model"]["kind"] == cls.model_kind

    @classmethod
    def model_kwargs(cls, config: dict) -> dict:
        """Its model's arguments beyond the common ones, from the config."""
        return {}

    @classmethod
    def build(cls, config: dict, **common):
        factory = cls.factory
        if isinstance(factory, str):
            module, _, name = factory.partition(":")
            factory = getattr(importlib.import_module(module), name)
        return factory(**common, **cls.model_kwargs(config))


METHODS: list[type[Method]] = []  # every column, in order (register keeps it sorted)
METHOD_BY_NAME: dict[str, type[Method]] = {}
BASELINES: list[str] = []  # the baselines' names, in column order
BASELINE_BY_NAME: dict[str, type[Baseline]] = {}


def register(cls):
    """Class decorator: ``cls`` becomes a column (a Baseline also a model kind and a study run)."""
    if cls.name in METHOD_BY_NAME:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHOD_BY_NAME[cls.name] = cls
    METHODS.append(cls)
    METHODS.sort(key=lambda m: m.order)
    if issubclass(cls, Baseline):
        BASELINE_BY_NAME[cls.name] = cls
        BASELINES[:] = [m.name for m in METHODS if m.name in BASELINE_BY_NAME]
    return cls


def unregister(name: str) -> None:
    """Forget a method (tests that register one of their own)."""
    cls = METHOD_BY_NAME.pop(name)
    METHODS.remove(cls)
    BASELINE_BY_NAME.pop(name, None)
    if name in BASELINES:
        BASELINES.remove(name)


def model_kinds() -> tuple[str, ...]:
    """Every `model.kind`: the gated network's, then each baseline's own."""
    return tuple(dict.fromkeys([GATED, *(BASELINE_BY_NAME[b].model_kind for b in BASELINES)]))


def for_kind(kind: str) -> type[Baseline]:
    """The baseline whose model is `model.kind` ``kind`` (not the gated network)."""
    for name in BASELINES:
        if BASELINE_BY_NAME[name].model_kind == kind and kind != GATED:
            return BASELINE_BY_NAME[name]
    raise ValueError(f"no baseline builds model.kind {kind!r}; known: {', '.join(model_kinds())}")


def run_method(config: dict) -> str | None:
    """The baseline a run's config trains (None: the gated network, which gives the gated methods)."""
    for name in BASELINES:
        if BASELINE_BY_NAME[name].trains(config):
            return name
    return None


def normalize_kind(config: dict) -> dict:
    """`model.kind: late_fusion` (before the registry) → `gated`, with a one-line deprecation
    note; old run folders load as the same training."""
    kind = config["model"]["kind"]
    if kind in DEPRECATED_KINDS:
        warnings.warn(f"model.kind: {kind} is deprecated; read as {DEPRECATED_KINDS[kind]}", FutureWarning,
                      stacklevel=3)
        config["model"]["kind"] = DEPRECATED_KINDS[kind]
    return config


def _fused_pass_only() -> str:
    """The study's override that trains the gated network on the fused pass only."""
    return "training.pass_weights={" + ", ".join(f"{k}: {w}" for k, w in fused_only_weights().items()) + "}"


# ------------------------------------------------------------------------------ the columns
@register
class EarlyFusion(Baseline):
    """BigEarthNet-MM: the 12 S2 and 2 S1 bands stacked into one backbone."""

    name, label, order = "early_fusion", "Early Fusion", 10
    model_kind, factory = "early_fusion", "tf_fusion.baselines:EarlyFusionModel"
    study_overrides = ("model.kind=early_fusion",)
    experiment = "paper_early_fusion"


@register
class LateFusion(Baseline):
    """The gated network at stage 5 trained on the fused pass only."""

    name, label, order = "late_fusion", "Late Fusion", 20
    model_kind = GATED
    study_overrides = (_fused_pass_only(), "model.fusion_stage=5")
    experiment = "paper_baseline"

    @classmethod
    def trains(cls, config):
        weights = config["training"]["pass_weights"]
        return config["model"]["kind"] == GATED and all(w == 0 for n, w in weights.items() if n != FUSED.name)


@register
class EmbraceNet(Baseline):
    """Choi & Lee 2019: one modality per fused feature, drawn ∝ availability."""

    name, label, order = "embracenet", "EmbraceNet", 30
    model_kind, factory = "embracenet", "tf_fusion.baselines:EmbraceNetModel"
    study_overrides = ("model.kind=embracenet",)
    sees_availability = True
    missing = "selection probability 0"
    experiment = "paper_embracenet"

    @classmethod
    def model_kwargs(cls, config):
        e = config["model"]["embracenet"]
        return dict(width=e["width"], modality_dropout=e["modality_dropout"], seed=config["training"]["seed"])


@register
class InputSensorDropout(Baseline):
    """Early fusion trained with whole modalities zeroed and flagged at random (Mena et al.)."""

    name, label, order = "isd", "Sensor Dropout", 40
    model_kind, factory = "isd", "tf_fusion.baselines:SensorDropoutModel"
    study_overrides = ("model.kind=isd",)
    sees_availability = True
    missing = "zeros, flag 0"
    corrupted = "sees the noise (flag 1)"
    experiment = "paper_isd"

    @classmethod
    def model_kwargs(cls, config):
        return dict(sensor_dropout=config["model"]["isd"]["dropout"], seed=config["training"]["seed"])


@register
class Ensemble(Baseline):
    """An optical-only and a SAR-only network, their probabilities averaged over the available."""

    name, label, order = "ensemble", "Single-Modality Ensemble", 50
    model_kind, factory = "ensemble", "tf_fusion.baselines:EnsembleModel"
    study_overrides = ("model.kind=ensemble",)
    sees_availability = True
    missing = "the other network alone"
    corrupted = "averages in the noisy one"
    experiment = "paper_ensemble"


_PASS_COLUMNS = {"non_adaptive": ("Non-Adaptive Fusion", None, 120), "optical_only": ("Optical Only", OPTICAL, 100),
                 "sar_only": ("SAR Only", SAR, 110)}
for _p in PASSES:  # one column per gate setting of the gated network
    _label, _modality, _order = _PASS_COLUMNS[_p.method]
    register(type(f"Pass_{_p.name}", (Method,), {"name": _p.method, "label": _label, "modality": _modality,
                                                  "order": _order}))


@register
class Adaptive(Method):
    """Eq. 3: the passes weighted by the OOD detectors' probabilities."""

    name, label, order = ADAPTIVE, "Adaptive Fusion", 130


@register
class AdaptivePaperHeads(Method):
    """Eq. 3 gated by the paper's binary heads alone, shown beside the run's gate when that gate
    holds them among others (the default): the paper's method next to the robust default."""

    name, label, order = ADAPTIVE_PAPER, "Adaptive (paper's heads)", 140


GATED_METHODS = (ADAPTIVE, *(p.method for p in PASSES))  # what one run of the gated network gives
