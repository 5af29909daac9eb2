"""The comparison's vocabulary: test scenarios and methods, by the names results.json uses.

Evaluation runs these scenarios, the report prints them in this order with these labels, and the
published figures (`paper_figures`) are keyed by the same names. No TensorFlow here: the report
and its CLI read results without it.
"""
from __future__ import annotations

import dataclasses

from .passes import PASSES

OPTICAL, SAR = "optical", "sar"
INPUT_KEY = {OPTICAL: "s2", SAR: "s1"}  # the model input each modality feeds


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    subset: str  # the build's subset it reads
    label: str  # row label of the table
    modality: str | None = None  # the input it changes: "optical" or "sar"
    change: str | None = None  # None | "missing" (zeros) | "noise" (seeded Gaussian noise added)

    @property
    def has_labels(self) -> bool:
        """False for patches of OOD classes only: no in-distribution label, no F-scores."""
        return self.subset != "ood_test"


SCENARIOS = (
    Scenario("clear", "test", "Clear"),
    Scenario("ood_classes", "ood_test", "OOD classes (clear)"),
    Scenario("cloudy", "cloudy", "Clouds and shadows"),
    Scenario("very_cloudy", "very_cloudy", "Cloudy, hand-picked"),
    Scenario("snow", "snow", "Snow and ice"),
    Scenario("missing_sar", "test", "Missing SAR", SAR, "missing"),
    Scenario("missing_optical", "test", "Missing optical", OPTICAL, "missing"),
    Scenario("corrupted_optical", "test", "Optical corrupted", OPTICAL, "noise"),
    Scenario("corrupted_sar", "test", "SAR corrupted", SAR, "noise"),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}
REFERENCE = "clear"  # every other scenario is separated from this one


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str


# The paper's Table 1 order; the gated network's single-setting methods come from the table of passes.
_PASS_LABELS = {"non_adaptive": "Non-Adaptive Fusion", "optical_only": "Optical Only", "sar_only": "SAR Only"}
METHODS = (
    Method("baseline", "Baseline Fusion"),
    Method(PASSES[0].method, _PASS_LABELS[PASSES[0].method]),
    Method("adaptive", "Adaptive Fusion"),
    *(Method(p.method, _PASS_LABELS[p.method]) for p in PASSES[1:]),
    Method("baseline_early", "Baseline Fusion (early)"),  # the extension's further baselines
    Method("embracenet", "EmbraceNet"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}
ADAPTIVE = "adaptive"
BASELINE = "baseline"
GATED_METHODS = (ADAPTIVE, *(p.method for p in PASSES))  # what one run of the gated network gives


def method_label(name: str) -> str:
    return METHOD_BY_NAME[name].label if name in METHOD_BY_NAME else name


def scenario_label(name: str) -> str:
    return SCENARIO_BY_NAME[name].label if name in SCENARIO_BY_NAME else name


def ordered(names, vocabulary) -> list[str]:
    """`names` in the vocabulary's order, unknown ones after them in their own order."""
    names = list(names)
    known = [v.name for v in vocabulary if v.name in names]
    return known + [n for n in names if n not in known]
