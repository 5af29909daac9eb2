"""Distribution-shift aware prediction (paper Eq. 3) and the one graph that serves it.

The gates of the fusion network are treated as independent Bernoulli variables,
``λ_opt ~ Ber(p_o)`` and ``λ_sar ~ Ber(p_s)``, where ``p_o`` / ``p_s`` are the OOD detectors'
probabilities that each modality is in-distribution, and the prediction is their expectation::

    y = p_o·p_s·f_c(1,1) + p_o·(1−p_s)·f_c(1,0) + (1−p_o)·p_s·f_c(0,1) + (1−p_o)·(1−p_s)·0.5

one term per row of ``tf_fusion.passes.PASSES``, weighted by the probability of its gate
setting, plus the no-evidence term: with neither modality left the prediction is the constant
0.5 for every class, by construction (not the classifier's output at λ = (0, 0)).
``expected_prediction`` is the one place of this equation; ``ExpectedPrediction`` wraps it as a
layer.

``build_adaptive_model(fusion, detector_opt, detector_sar)`` is one functional graph over the
trained layers (shared, not copied): each branch runs once, the fusion head is applied to the
branch outputs once per pass (``FusionModel.head_passes``), and p_o, p_s come from the chosen
detector of each modality, reading what the graph already computed: the paper's binary heads
read the branch output; a post-hoc ``tf_fusion.detectors.DetectorProbability`` reads the branch
embedding (``BranchEmbedding``: below fusion stage 5 the feature maps global-average-pooled)
and the logits of that modality's single-modality pass.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .detector_registry import BINARY_HEAD, FEATURES  # the paper's heads' name; the classifier's input
from .model import Gate, probabilities  # importing tf_fusion.model also registers its layers for loading
from .passes import FUSED, NO_EVIDENCE, PASSES
from .protocol import MODALITIES, OPTICAL, SAR


def _column(p):
    """A [B] or [B, 1] probability → float32 [B, 1] (broadcasts over the classes)."""
    p = ops.cast(p, "float32")
    return ops.expand_dims(p, -1) if len(p.shape) == 1 else p


def _term(weight, y):
    """``weight · y``, exactly +0.0 where the weight is 0 (even if ``y`` is not finite there)."""
    return ops.where(ops.not_equal(weight, 0), ops.multiply(weight, y), ops.zeros_like(y))


def setting_probability(p, gate: float):
    """P(λ = gate) for λ ~ Ber(p): p for an open gate, 1 − p for a closed one."""
    return p if gate else 1.0 - p


def expected_prediction(p_o, p_s, predictions):
    """Eq. 3: the expected class probabilities under ``λ_opt ~ Ber(p_o)``, ``λ_sar ~ Ber(p_s)``.

    p_o, p_s: [B, 1] or [B] probabilities that the optical / SAR input is in-distribution.
    predictions: {pass name: [B, C] class probabilities of the fusion head at that pass's gate
    setting} for every row of PASSES. Returns float32 [B, C] (a tensor; NumPy inputs are accepted).

    A term whose weight is 0 contributes exactly 0, even where its prediction is not finite (a
    missing modality), so p_o = p_s = 0 gives exactly 0.5 and p_o = p_s = 1 gives exactly the
    fused prediction.
    """
    p_o, p_s = _column(p_o), _column(p_s)
    ys = {p.name: ops.cast(predictions[p.name], "float32") for p in PASSES}
    out = ops.multiply(ops.multiply(1.0 - p_o, 1.0 - p_s), ops.full_like(ys[FUSED.name], NO_EVIDENCE))
    for p in PASSES:
        weight = ops.multiply(setting_probability(p_o, p.lambda_opt), setting_probability(p_s, p.lambda_sar))
        out = out + _term(weight, ys[p.name])
    return out


def bernoulli_entropy(p):
    """Per-sample average over classes of the binary entropy in bits, [B, C] → float32 [B]
    (0·log 0 = 0; the float32 twin of ``tf_fusion.scores.entropy_bits``)."""
    p = ops.clip(ops.cast(p, "float32"), 0.0, 1.0)
    q = 1.0 - p

    def plogp(x):
        positive = ops.greater(x, 0)
        return ops.where(positive, x * ops.log(ops.where(positive, x, ops.ones_like(x))), ops.zeros_like(x))

    return ops.mean(-(plogp(p) + plogp(q)), axis=-1) / ops.log(ops.cast(2.0, "float32"))


def confidence(p):
    """Per-sample average over classes of max(p, 1 − p), [B, C] → float32 [B]
    (the float32 twin of ``tf_fusion.scores.confidence``)."""
    p = ops.clip(ops.cast(p, "float32"), 0.0, 1.0)
    return ops.mean(ops.maximum(p, 1.0 - p), axis=-1)


# ------------------------------------------------------------------------------------ layers
class _Float32Layer(layers.Layer):
    """A layer computing in float32 whatever the mixed-precision policy (probabilities, scores)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package="tf_fusion")
class ExpectedPrediction(_Float32Layer):
    """``[p_o, p_s, {pass name: y}]`` → Eq. 3 (``expected_prediction``), float32 [B, C]."""

    def call(self, inputs):
        p_o, p_s, predictions = inputs
        return expected_prediction(p_o, p_s, predictions)

    def compute_output_shape(self, input_shapes):
        return input_shapes[2][FUSED.name]


class _PerSampleScore(_Float32Layer):
    """[B, C] class probabilities → [B] float32 score ``_score(p)``."""

    _score = None

    def call(self, p):
        return type(self)._score(p)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]


@keras.saving.register_keras_serializable(package="tf_fusion")
class BernoulliEntropy(_PerSampleScore):
    """[B, C] class probabilities → [B] average binary entropy in bits (float32)."""

    _score = staticmethod(bernoulli_entropy)


@keras.saving.register_keras_serializable(package="tf_fusion")
class Confidence(_PerSampleScore):
    """[B, C] class probabilities → [B] average max(p, 1 − p) (float32)."""

    _score = staticmethod(confidence)


@keras.saving.register_keras_serializable(package="tf_fusion")
class BranchEmbedding(_Float32Layer):
    """A branch output as the post-hoc detectors read it, float32 [B, D]: the pooled embedding
    as is at fusion stage 5, the global average of the feature maps [B, H, W, D] below it."""

    def call(self, z):
        z = ops.cast(z, "float32")
        return ops.mean(z, axis=(1, 2)) if len(z.shape) == 4 else z

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def single_modality_pass(modality: str):
    """The row of PASSES whose gates open ``modality`` only (its logits feed the logit detectors)."""
    gates = (1.0, 0.0) if modality == OPTICAL else (0.0, 1.0)
    return next(p for p in PASSES if p.gates == gates)


def detector_name(detector) -> str:
    """``binary_head`` for the paper's heads, else the post-hoc detector's name."""
    return getattr(detector, "detector", BINARY_HEAD)


def _is_post_hoc(detector) -> bool:
    """A post-hoc detector layer (``tf_fusion.detectors.DetectorProbability``, which names its
    detector) reads [embedding, logits(, features)]; the paper's heads read the branch output."""
    return detector_name(detector) != BINARY_HEAD


def _reads_features(detector) -> bool:
    return any(FEATURES in getattr(d, "reads", ()) for d in members(detector))


def members(detector) -> tuple:
    """The detectors of one modality's gate: a layer alone, or a combination (list or tuple),
    whose p is the smallest of its members' (`tf_fusion.gate`)."""
    return tuple(detector) if isinstance(detector, (list, tuple)) else (detector,)


# ------------------------------------------------------------------------------------ model
def build_adaptive_model(fusion, detector_opt, detector_sar, with_availability: bool = False,
                         with_features: bool = False, binary_heads=None) -> keras.Model:
    """One functional graph for Eq. 3, sharing the layers of ``fusion`` and the detectors.

    fusion: a trained ``FusionModel`` (``branches``, ``head_passes``); detector_opt / detector_sar:
    what gives p_o / p_s, [B, 1]: the paper's OOD heads (``tf_fusion.ood.build_ood_head``, reading
    the branch output) or post-hoc ``tf_fusion.detectors.DetectorProbability`` layers (reading
    ``BranchEmbedding`` of the branch output, the logits of the modality's single-modality
    pass and, for ``vim`` and ``scale``, the classifier's input in that pass, which Eq. 3
    computes anyway: nothing runs twice); or a tuple of such detectors, a combination whose p is
    the smallest of its members' (`tf_fusion.gate`: the modality is out when any says so).

    Inputs ``{"s2": [B,H,W,12], "s1": [B,H,W,2]}``, plus, with ``with_availability``,
    ``"optical_available"`` and ``"sar_available"`` (float32 [B, 1], 1 = present, 0 = missing),
    the authors' protocol for a missing modality: p_o and p_s are multiplied by them, so a
    missing modality has in-distribution probability exactly 0 and Eq. 3 falls back to the other
    one (or to 0.5 when both are missing), and the non-adaptive prediction closes the missing
    modality's gate — Eq. 3 with p = the flags — whatever the missing input holds.
    Outputs (all float32): ``probabilities`` (Eq. 3, [B, C]), ``p_optical`` and ``p_sar``
    ([B, 1]), ``entropy`` and ``confidence`` of the adaptive probabilities ([B]), and
    ``probabilities_<method>`` of every pass (the fusion head at that pass's gate setting; with
    availability, the non-adaptive one at the available modalities' gates). Each branch runs
    once per call, the fusion head (with its trunk below stage 5) once per pass.

    With ``with_features`` (evaluation's detector pass, `tf_fusion.evaluate --detectors`) the
    graph also outputs what every detector reads, from the same single branch evaluation:
    ``embedding_optical`` / ``embedding_sar`` (``BranchEmbedding``, [B, D]), ``logits_<method>``
    of every pass ([B, C]), ``features_optical`` / ``features_sar`` (the classifier's input in
    the modality's single-modality pass, ``FusionModel.head_features``, [B, F]), and
    ``p_<modality>_<detector>``, each gate member's p before the availability flags ([B, 1]);
    ``binary_heads`` (head_opt, head_sar) add the paper's heads' ``p_<modality>_binary_head``
    where they are not in the gate.
    """
    if not hasattr(fusion, "head_passes"):
        raise TypeError(f"build_adaptive_model needs a gated late-fusion model (FusionModel); "
                        f"got {type(fusion).__name__}")
    inputs = {"s2": keras.Input(tuple(fusion.encoder_opt.input.shape[1:]), name="s2"),
              "s1": keras.Input(tuple(fusion.encoder_sar.input.shape[1:]), name="s1")}
    z_opt, z_sar = fusion.branches(inputs)
    branch = {OPTICAL: z_opt, SAR: z_sar}
    chosen = dict(zip(MODALITIES, (detector_opt, detector_sar)))
    single = {m: single_modality_pass(m) for m in MODALITIES}
    features = {}
    if with_features or any(_reads_features(d) for d in chosen.values()):
        # the single-modality passes through the head that also gives the classifier's input
        logits = fusion.head_passes(z_opt, z_sar, [p for p in PASSES if p not in single.values()], logits=True)
        single_logits, single_features = fusion.head_features(z_opt, z_sar, list(single.values()))
        logits.update(single_logits)
        logits = {p.name: logits[p.name] for p in PASSES}
        features = {m: single_features[single[m].name] for m in MODALITIES}
    else:
        logits = fusion.head_passes(z_opt, z_sar, logits=True)
    predictions = {name: probabilities(v) for name, v in logits.items()}
    embeddings = {}

    def embedding(modality):
        if modality not in embeddings:
            embeddings[modality] = BranchEmbedding(name=f"embedding_{modality}")(branch[modality])
        return embeddings[modality]

    def probability(detector, modality):
        if _is_post_hoc(detector):
            reads = [embedding(modality), logits[single[modality].name]]
            return detector(reads + [features[modality]] if _reads_features(detector) else reads)
        return detector(branch[modality])

    p_members = {m: {detector_name(d): probability(d, m) for d in members(gate)} for m, gate in chosen.items()}
    p_in = {m: next(iter(p.values())) if len(p) == 1 else layers.Minimum(dtype="float32", name=f"gate_{m}")(
        list(p.values())) for m, p in p_members.items()}
    p_o, p_s = p_in[OPTICAL], p_in[SAR]
    outputs = {p.output: predictions[p.name] for p in PASSES}
    if with_features:
        for m in chosen:
            outputs[f"embedding_{m}"] = embedding(m)
            outputs[f"features_{m}"] = features[m]
            outputs.update({f"p_{m}_{name}": p for name, p in p_members[m].items()})
        outputs.update({f"logits_{p.method}": logits[p.name] for p in PASSES})
        for m, head in zip(MODALITIES, binary_heads or ()):
            if BINARY_HEAD not in p_members[m]:
                outputs[f"p_{m}_{BINARY_HEAD}"] = head(branch[m])
    if with_availability:
        available = {m: keras.Input((1,), name=f"{m}_available") for m in ("optical", "sar")}
        inputs.update({f"{m}_available": x for m, x in available.items()})
        p_o = Gate(dtype="float32", name="available_opt")([p_o, available["optical"]])
        p_s = Gate(dtype="float32", name="available_sar")([p_s, available["sar"]])
        outputs[FUSED.output] = ExpectedPrediction(name="available_gates")(
            [available["optical"], available["sar"], predictions])
    probs = ExpectedPrediction(name="expected_prediction")([p_o, p_s, predictions])
    outputs.update(probabilities=probs, p_optical=p_o, p_sar=p_s, entropy=BernoulliEntropy(name="entropy")(probs),
                   confidence=Confidence(name="confidence")(probs))
    return keras.Model(inputs, outputs, name="adaptive_fusion")
