"""The table of gate settings: one row per pass of the fusion head f_c.

The paper scores every batch with three gate settings (λ_opt, λ_sar) of one network. Everything
keyed by a setting derives from this table, so a new pass (or a renamed one) changes one line:

- Eq. 2 (`model.FusionModel`): the loss `Σ w_name · BCE_name`, weights from
  `training.pass_weights[name]`, logged as `loss_<name>`;
- the validation metrics, `val_<prefix>f1_samples` …, one set per pass;
- Eq. 3 (`adaptive.expected_prediction`): the weight of a pass is P(λ_opt) · P(λ_sar) under the
  detectors' probabilities;
- evaluation's methods and the adaptive graph's outputs `probabilities_<method>`;
- the tuning objective `val_robust_f1` (the mean over passes) and TensorBoard's HParams columns.

λ = (0, 0) is not a pass: with no modality left there is no evidence (Eq. 3's constant 0.5).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Pass:
    name: str  # key of training.pass_weights; the loss is logged as loss_<name>
    lambda_opt: float
    lambda_sar: float
    method: str  # the method this setting gives in evaluation (results.json, table columns)
    prefix: str  # prefix of its metric names: val_<prefix>f1_samples
    label: str  # in words, for console lines and plots
    weight: float = 1.0  # its default Eq. 2 weight (the paper's), `training.pass_weights[name]`

    @property
    def weight_key(self) -> str:
        """Its weight's name in the tuning space (`tuning.fusion.w_<name>`)."""
        return f"w_{self.name}"

    @property
    def gates(self) -> tuple[float, float]:
        return self.lambda_opt, self.lambda_sar

    @property
    def output(self) -> str:
        """Its output name in the adaptive graph (and the SavedModel, for the fused pass)."""
        return f"probabilities_{self.method}"

    def metric(self, name: str) -> str:
        """`f1_samples` → this pass's metric name, e.g. `opt_f1_samples`."""
        return f"{self.prefix}{name}"


PASSES = (
    Pass("fuse", 1.0, 1.0, "non_adaptive", "", "fused", 2.0),
    Pass("opt", 1.0, 0.0, "optical_only", "opt_", "optical only"),
    Pass("sar", 0.0, 1.0, "sar_only", "sar_", "SAR only"),
)
BY_NAME = {p.name: p for p in PASSES}
FUSED = BY_NAME["fuse"]
NO_EVIDENCE = 0.5  # the prediction of the (λ_opt, λ_sar) = (0, 0) term: no modality, no evidence
ROBUST_F1 = "val_robust_f1"  # the tuning objective: mean validation samples-F1 over the passes


def default_weights() -> dict:
    """`training.pass_weights`' default: the paper's Eq. 2 weights."""
    return {p.name: p.weight for p in PASSES}


def fused_only_weights() -> dict:
    """The weights of the fused-pass-only training (the late-fusion baseline)."""
    return {p.name: 1.0 if p is FUSED else 0.0 for p in PASSES}


def weights_tuple(pass_weights: dict) -> tuple[float, ...]:
    """`training.pass_weights` ({fuse, opt, sar}) → the weights in PASSES order."""
    return tuple(float(pass_weights[p.name]) for p in PASSES)


def validation_f1_names() -> list[str]:
    """The logged validation samples-F1 of every pass, whose mean is `val_robust_f1`."""
    return [f"val_{p.metric('f1_samples')}" for p in PASSES]
