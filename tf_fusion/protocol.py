"""The comparison's vocabulary and the authors' protocol: test scenarios and methods, by the
names results.json uses.

The methods (columns) live in `tf_fusion.methods`' registry and are re-exported here.
Evaluation runs these scenarios, the report prints them in this order with these labels, and the
published figures (`paper_figures`) are keyed by the same names. No TensorFlow here: the report
and its CLI read results without it.

The protocol (Gawlikowski et al.'s released code and the extension's evaluation; the README's
"OOD detectors, adaptive prediction, evaluation" section):
- a missing modality is zeros in place of its normalised input, and its availability is 0: the
  gated methods close its gate (λ = 0, and p = 0 for it in Eq. 3), EmbraceNet gives it selection
  probability 0, sensor dropout and the ensemble take the flag, the baselines without a gate
  (early and late fusion) see the zeros (each baseline's treatment: `tf_fusion.methods`);
  optical-only and SAR-only are not reported where their modality is missing;
- a corrupted modality has its normalised input replaced by N(0, 1) noise;
- beyond the authors: additive Gaussian noise of a given strength (`evaluation.additive_noise`),
  and region shift (patches of held-out countries, `tfrecords_builder build --holdout-countries`).
"""
from __future__ import annotations

import dataclasses

from .methods import (ADAPTIVE, ADAPTIVE_PAPER, BASELINES, GATED_METHODS, METHOD_BY_NAME, METHODS,  # noqa: F401
                      run_method)

from .methods import OPTICAL, SAR  # noqa: E402
MODALITIES = (OPTICAL, SAR)
INPUT_KEY = {OPTICAL: "s2", SAR: "s1"}  # the model input each modality feeds
OOD_LABEL_SUBSETS = ("ood_test", "region_shift_ood")  # patches of OOD classes only: no F-scores


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    subset: str  # the build's subset it reads
    label: str  # row label of the table
    modality: str | None = None  # the input it changes: "optical" or "sar"
    change: str | None = None  # None | "missing" | "replaced" (N(0, 1) noise) | "noise" (added)
    strength: float = 0.0  # std of the added noise

    @property
    def has_labels(self) -> bool:
        """False for patches of OOD classes only: no in-distribution label, no F-scores."""
        return self.subset not in OOD_LABEL_SUBSETS

    def available(self, modality: str) -> float:
        """1.0 unless this scenario removes ``modality``."""
        return 0.0 if self.change == "missing" and self.modality == modality else 1.0


SCENARIOS = (
    Scenario("clear", "test", "Clear"),
    Scenario("ood_classes", "ood_test", "OOD classes (clear)"),
    Scenario("cloudy", "cloudy", "Clouds and shadows"),
    Scenario("very_cloudy", "very_cloudy", "Cloudy, hand-picked"),
    Scenario("snow", "snow", "Snow and ice"),
    Scenario("missing_sar", "test", "Missing SAR", SAR, "missing"),
    Scenario("missing_optical", "test", "Missing optical", OPTICAL, "missing"),
    Scenario("corrupted_optical", "test", "Optical corrupted", OPTICAL, "replaced"),
    Scenario("corrupted_sar", "test", "SAR corrupted", SAR, "replaced"),
    Scenario("region_shift", "region_shift", "Region shift"),
    Scenario("region_shift_ood", "region_shift_ood", "Region shift, OOD classes"),
)
REFERENCE = "clear"  # every other scenario is separated from this one


def noise_scenario(modality: str, std: float) -> Scenario:
    label = "Optical" if modality == OPTICAL else "SAR"
    return Scenario(f"{modality}_noise_{std:g}", "test", f"{label} + noise (std {std:g})", modality, "noise", float(std))


def scenarios(config: dict) -> list[Scenario]:
    """The scenarios an evaluation runs: the fixed ones, then additive noise of each strength."""
    extra = [noise_scenario(m, std) for std in config["evaluation"]["additive_noise"] for m in MODALITIES]
    return [*SCENARIOS, *extra]


def scenario_by_name(name: str) -> Scenario | None:
    for s in SCENARIOS:
        if s.name == name:
            return s
    for m in MODALITIES:
        prefix = f"{m}_noise_"
        if name.startswith(prefix):
            try:
                return noise_scenario(m, float(name[len(prefix):]))
            except ValueError:
                return None
    return None


def reported(method: str, scenario: Scenario) -> bool:
    """False for a single-modality method on a scenario without its modality ("–" in the table)."""
    m = METHOD_BY_NAME.get(method)
    return m is None or m.modality is None or scenario.available(m.modality) == 1.0


def method_label(name: str) -> str:
    return METHOD_BY_NAME[name].label if name in METHOD_BY_NAME else name


def scenario_label(name: str) -> str:
    s = scenario_by_name(name)
    return s.label if s else name


def ordered(names, vocabulary) -> list[str]:
    """`names` in the vocabulary's order, unknown ones after them in their own order."""
    names = list(names)
    known = [v.name for v in vocabulary if v.name in names]
    return known + [n for n in names if n not in known]
