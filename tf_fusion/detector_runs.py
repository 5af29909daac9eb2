"""A run's OOD detectors: the one that gates Eq. 3 (`ood.detector`), fitting the post-hoc ones
into the run folder, and turning the fitted ones into graph layers.

The scores, calibrators and the in-graph layer are `tf_fusion.detectors`'; the paper's binary
heads are `tf_fusion.ood`'s. This module connects them to a run:

- ``settings(config)``: the detector settings of the run's `ood` section (`ood.calibration`,
  `ood.knn_k`, `ood.knn_reference`; `ood.seed` seeds the training subsample and the kNN reference).
- ``fit_run(run, names)``: the post-hoc detectors ``names``, loaded from RUN/detectors when they
  were fitted with the run's settings, else fitted and saved there (`detectors.save`): ONE pass
  over `train` (each branch once per batch) gives the statistics of the detectors that fit on
  training samples (``train_pass``), each on its rows (``train_rows``: the Gaussians and ViM a
  fixed subsample of at most ``GAUSSIAN_SAMPLE`` training patches, seed 0: it depends on the
  data alone; kNN its reference of ``min(N, knn_reference)`` patches drawn with `ood.seed`), the
  classifier's weights come from the trained model — then one pass each over `val` and
  `ood_val` gives the raw scores the calibrators are fitted on. The logit detectors and SCALE
  need no `train` pass.
- ``layers(run, name)``: (optical, SAR) layers giving p for ``build_adaptive_model``: the binary
  heads, or ``DetectorProbability`` layers of a fitted post-hoc detector (a one-line RunError
  naming the command that fits it otherwise).
- ``Scores``: raw scores and calibrated p of fitted detectors over a stream of batches, in the
  float64 NumPy of ``detectors.raw_score`` (what evaluation reports; the graph is its float32 twin).

The detectors read (``detector_registry.READS``) the branch output at the fusion point: the pooled
embedding at stage 5, below it the feature maps global-average-pooled (``adaptive.BranchEmbedding``),
the logits of the modality's single-modality pass (``adaptive.single_modality_pass``), the
classifier's input in that pass (``FusionModel.head_features``) and the classifier's weights.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import detector_registry as registry
from . import detectors, gate
from .config import ConfigError
from .protocol import MODALITIES
from .runs import DETECTORS, Run, RunError

CORRUPTIONS = "corruptions"  # the OOD side of calibration made from val (`tf_fusion.shifts.corrupt`)
_AGAINST = {"ood_val": "{ood_val} ood_val patches", CORRUPTIONS: "{val} corrupted val patches"}
GAUSSIAN_SAMPLE = registry.TRAIN_SAMPLE  # training patches the Gaussians and ViM are fitted on
_CHUNK = 4096  # rows scored per `raw_score` call (its per-call cost: a Cholesky factor, a kNN index)
ALL = "all"


def settings(config: dict) -> dict:
    """The run's detector settings (``detectors.resolve_settings``'s keys) from its `ood` section."""
    o = config["ood"]
    return detectors.resolve_settings({"calibration": o["calibration"], "calibrate_on": o["calibrate_on"],
                                       "knn_k": o["knn_k"], "knn_reference": o["knn_reference"], "seed": o["seed"]})


def requested(text: str) -> list[str]:
    """``--detectors`` → detector names: a comma list of ``detector_registry.DETECTORS``, of
    combinations (``a+b``: p = the smaller, `tf_fusion.gate`) and ``all`` (the registry's, the
    paper's heads first)."""
    names = []
    for item in (n.strip() for n in text.split(",")):
        names += [registry.BINARY_HEAD, *registry.POST_HOC] if item == ALL else [item] if item else []
    unknown = [n for n in names if not all(m in registry.DETECTORS for m in n.split(gate.JOIN))]
    if unknown or not names:
        raise ConfigError(f"--detectors {text!r}: expected '{ALL}' or a comma list of "
                          f"{', '.join(registry.DETECTORS)} or their combinations a{gate.JOIN}b"
                          + (f"; unknown {unknown}" if unknown else ""))
    return list(dict.fromkeys(gate.JOIN.join(gate.parse(n)[MODALITIES[0]]) for n in names))


def members(names) -> list[str]:
    """The single detectors ``names`` (and the combinations among them) need, each once."""
    return list(dict.fromkeys(m for n in names for m in n.split(gate.JOIN)))


# ------------------------------------------------------------------------------------ the pass
def features_model(fusion):
    """{s2, s1} → ``embedding_<modality>`` ([B, D], ``BranchEmbedding``), ``logits_<method>``
    of each single-modality pass ([B, C]) and ``features_<modality>``, the classifier's input
    in that pass ([B, F]) — the names of the adaptive graph's ``with_features`` outputs: each
    branch once, the head twice."""
    import keras

    from .adaptive import BranchEmbedding, single_modality_pass

    inputs = {"s2": keras.Input(tuple(fusion.encoder_opt.input.shape[1:]), name="s2"),
              "s1": keras.Input(tuple(fusion.encoder_sar.input.shape[1:]), name="s1")}
    z = dict(zip(MODALITIES, fusion.branches(inputs)))
    passes = {m: single_modality_pass(m) for m in MODALITIES}
    logits, features = fusion.head_features(z[MODALITIES[0]], z[MODALITIES[1]], list(passes.values()))
    outputs = {}
    for m in MODALITIES:
        outputs[f"embedding_{m}"] = BranchEmbedding(name=f"embedding_{m}")(z[m])
        outputs[f"logits_{passes[m].method}"] = logits[passes[m].name]
        outputs[f"features_{m}"] = features[passes[m].name]
    return keras.Model(inputs, outputs, name="detector_features")


def traced(model):
    """``model`` in inference mode as one tf.function for any batch size ({s2, s1} → outputs)."""
    import tensorflow as tf

    return tf.function(lambda x: model({"s2": x["s2"], "s1": x["s1"]}, training=False), reduce_retracing=True)


def batches(call, manifest, subset: str, config: dict, transform=None):
    """(outputs of ``call`` (see ``traced``) as NumPy, labels) per batch of ``subset`` in file
    order, checked against the manifest's count (a ManifestError line naming the build otherwise);
    ``transform(inputs, batch index)`` changes each batch's inputs first (calibration's corruptions)."""
    from tfrecords_builder import ManifestError

    from . import data as tfdata

    d, ev = config["data"], config["evaluation"]
    ds = tfdata.make_dataset(manifest, subset, batch_size=ev["batch_size"], deterministic=True,
                             image_size=d["image_size"], resize_method=d["resize_method"])
    seen = 0
    with tfdata.shard_errors(manifest, [subset]):
        for i, (inputs, y) in enumerate(ds):
            out = {k: np.asarray(v) for k, v in call(transform(inputs, i) if transform else inputs).items()}
            seen += len(y)
            yield out, y.numpy()
    if seen != manifest.subset_size(subset):
        raise ManifestError(f"{manifest.path}: read {seen} records of {subset!r}, the manifest lists "
                            f"{manifest.subset_size(subset)}; {manifest.remedy()}")


class Scores:
    """Raw scores and calibrated p of fitted detectors over a stream of batches.

    fitted: {name: {modality: (stats, calibrator or None)}}; ``add`` takes one batch's
    ``embedding_<modality>``, ``logits_<method>`` of the single-modality passes and
    ``features_<modality>`` (the outputs of ``features_model`` or of the adaptive graph
    ``with_features``); ``result()`` → {name: {modality: (raw [N] float64, p [N] float64 or None
    without a calibrator)}}. Rows are scored ``_CHUNK`` at a time, so the float64 inputs held
    stay bounded."""

    def __init__(self, fitted: dict):
        self.fitted = fitted
        self._pending, self._rows = {m: [] for m in MODALITIES}, 0
        self._raw = {name: {m: [] for m in per} for name, per in fitted.items()}

    def add(self, outputs) -> None:
        from .adaptive import single_modality_pass

        for m in MODALITIES:
            keys = {registry.EMBEDDING: f"embedding_{m}", registry.LOGITS: f"logits_{single_modality_pass(m).method}",
                    registry.FEATURES: f"features_{m}"}
            self._pending[m].append({what: np.asarray(outputs[key]) for what, key in keys.items() if key in outputs})
        self._rows += len(self._pending[MODALITIES[0]][-1][registry.EMBEDDING])
        if self._rows >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        for m, parts in self._pending.items():
            if not parts:
                continue
            inputs = {what: np.concatenate([p[what] for p in parts]) for what in parts[0]}
            for name, per in self.fitted.items():
                if m in per:
                    self._raw[name][m].append(detectors.raw_score(name, stats=per[m][0], **inputs))
        self._pending, self._rows = {m: [] for m in MODALITIES}, 0

    def result(self) -> dict:
        self._flush()
        out = {}
        for name, per in self._raw.items():
            out[name] = {}
            for m, parts in per.items():
                raw = np.concatenate(parts) if parts else np.zeros(0)
                calibrator = self.fitted[name][m][1]
                out[name][m] = (raw, None if calibrator is None else np.asarray(calibrator(raw), np.float64))
        return out


class ScenarioScores:
    """What evaluation's pass keeps of one scenario for the detector comparison and temperature
    scaling, batch by batch from the adaptive graph's ``with_features`` outputs: the logits of
    every pass, the binary heads' p (when ``names`` holds them) and the post-hoc detectors'
    scores (``fitted``: ``fit_run``'s, scored by ``Scores``). ``result()`` → {"logits": {pass
    method: [N, C]}, "p": {name: {modality: [N]}}, "raw": {name: {modality: [N]}}} (the binary
    heads' raw score is their p)."""

    def __init__(self, names, fitted: dict):
        from .passes import PASSES

        self.names, self.binary = list(names), registry.BINARY_HEAD in members(names)
        self.logits = {p.method: [] for p in PASSES}
        self.heads = {m: [] for m in MODALITIES}
        self.scores = Scores(fitted) if fitted else None

    def add(self, outputs) -> None:
        outputs = {k: np.asarray(v) for k, v in outputs.items()
                   if k.startswith(("embedding_", "logits_", "features_", "p_"))}
        for method, parts in self.logits.items():
            parts.append(outputs[f"logits_{method}"])
        if self.binary:
            for m, parts in self.heads.items():
                parts.append(outputs[f"p_{m}_{registry.BINARY_HEAD}"].reshape(-1))
        if self.scores:
            self.scores.add(outputs)

    def result(self) -> dict:
        p, raw = {}, {}
        if self.binary:
            p[registry.BINARY_HEAD] = raw[registry.BINARY_HEAD] = {
                m: np.concatenate(v).astype(np.float64) for m, v in self.heads.items()}
        for name, per in (self.scores.result() if self.scores else {}).items():
            p[name], raw[name] = {m: v[1] for m, v in per.items()}, {m: v[0] for m, v in per.items()}
        for name in self.names:  # a combination's p is its members' smallest (its "raw score" too)
            if gate.JOIN in name:
                p[name] = raw[name] = {m: np.minimum.reduce([p[k][m] for k in name.split(gate.JOIN)])
                                       for m in MODALITIES}
        return {"logits": {k: np.concatenate(v) for k, v in self.logits.items()},
                "p": {n: p[n] for n in self.names}, "raw": {n: raw[n] for n in self.names}}


# ------------------------------------------------------------------------------------ fitting
def _corrupted(config: dict):
    """The calibration's corruptions of `val` (`shifts.corrupt`), seeded by `ood.seed`."""
    from .shifts import corrupt

    seed = config["ood"]["seed"]
    return lambda inputs, i: corrupt(inputs, i, seed)


def _post_hoc(names) -> list[str]:
    wrong = [n for n in names if n not in registry.DETECTORS or not registry.DETECTORS[n].post_hoc]
    if wrong:
        raise ValueError(f"fit_run fits post-hoc detectors ({', '.join(registry.POST_HOC)}); got {wrong} "
                         f"(the binary heads are trained by python -m tf_fusion.ood)")
    return list(dict.fromkeys(names))


_OUTPUTS = {registry.EMBEDDING: "embedding_{m}", registry.FEATURES: "features_{m}"}  # features_model's keys


def _train_samples(call, manifest, config: dict, samples: dict, reads) -> dict:
    """{detector: {modality: {what: [n, K]}, "labels": [n, C]}} of several subsamples of `train`
    (``samples``: {detector: sorted row indices}), all from one pass; ``reads``: what to keep of
    each row (the embedding, the classifier's input, the single-modality logits), each detector
    getting what it reads (one copy per distinct subsample)."""
    from .adaptive import single_modality_pass

    keys = {m: {what: (f"logits_{single_modality_pass(m).method}" if what == registry.LOGITS
                       else _OUTPUTS[what].format(m=m)) for what in reads} for m in MODALITIES}
    keep = np.unique(np.concatenate(list(samples.values())))
    parts, labels, offset = {m: {what: [] for what in reads} for m in MODALITIES}, [], 0
    for out, y in batches(call, manifest, "train", config):
        rows = np.isin(np.arange(offset, offset + len(y)), keep)
        offset += len(y)
        for m in MODALITIES:
            for what, key in keys[m].items():
                parts[m][what].append(out[key][rows].astype(np.float64))
        labels.append(y[rows])
    kept = {m: {what: np.concatenate(v) for what, v in per.items()} for m, per in parts.items()}
    kept_labels = np.concatenate(labels)
    cache = {}  # detectors on the same rows share one copy of what they read

    def rows(idx, m, what):
        key = (idx.tobytes(), m, what)
        if key not in cache:
            at = np.searchsorted(keep, idx)
            cache[key] = kept_labels[at] if what == "labels" else kept[m][what][at]
        return cache[key]

    return {name: {**{m: {what: rows(idx, m, what) for what in reads if what in registry.DETECTORS[name].reads}
                      for m in MODALITIES}, "labels": rows(idx, None, "labels")}
            for name, idx in samples.items()}


def fit_run(run: Run, names, log=print, fusion=None, manifest=None) -> dict:
    """{name: {modality: (stats, calibrator)}} of the post-hoc detectors ``names`` for the run's
    settings: loaded when RUN/detectors holds them fitted with these settings, otherwise fitted
    (see the module docstring) and saved there. A changed setting refits the detectors that
    depend on it (``detectors.fitted_settings``), and only those."""
    names = _post_hoc(names)
    config = run.config
    s = settings(config)
    todo = [n for n in names if not all(detectors.is_fitted(run.path, n, m, s) for m in MODALITIES)]
    out = {n: {m: detectors.load(run.path, n, m, s) for m in MODALITIES} for n in names if n not in todo}
    if out:
        log(f"{run.path}: detectors {', '.join(out)} already fitted with these settings; loading them")
    if not todo:
        return out
    manifest = manifest or run.manifest()
    sizes = {k: manifest.subset_size(k) for k in ("train", "val", "ood_val")}
    if not sizes["val"] or ("ood_val" in s["calibrate_on"].split("+") and not sizes["ood_val"]):
        raise RunError(f"{run.path}: calibrating {', '.join(todo)} needs val and ood_val patches; the build "
                       f"{manifest.dir} has {sizes['val']} and {sizes['ood_val']} (ood.calibrate_on=corruptions "
                       f"needs val only)")
    fusion = fusion or run.load_model()
    if not hasattr(fusion, "head_passes"):
        raise RunError(f"{run.path}: post-hoc detectors need the gated late-fusion model; this run trained "
                       f"{type(fusion).__name__}")
    call = traced(features_model(fusion))
    classifier = detectors.classifier_weights(fusion)
    samples = {}
    trained = [n for n in todo if registry.DETECTORS[n].train_pass]
    if trained:
        # each on its rows of train (`train_rows`): the Gaussians and ViM a fixed subsample (the
        # data alone decides it), kNN its reference as `detectors.fit` draws it (ood.seed)
        wanted = {n: registry.DETECTORS[n].train_rows(sizes["train"], s) for n in trained}
        reads = sorted({what for n in trained for what in registry.DETECTORS[n].reads} - {registry.CLASSIFIER},
                       key=registry.READS.index)
        log("fitting " + ", ".join(f"{n} on {len(i)}" for n, i in wanted.items()) + f" of {sizes['train']} train patches")
        samples = _train_samples(call, manifest, config, wanted, reads)
    stats = {n: {m: detectors.fit(n, samples[n][m].get(registry.EMBEDDING), samples[n]["labels"], s,
                                  features=samples[n][m].get(registry.FEATURES),
                                  logits=samples[n][m].get(registry.LOGITS), classifier=classifier)
                 if n in samples else detectors.fit(n, None, None, s, classifier=classifier)
                 for m in MODALITIES} for n in todo}
    raw = {}
    against = s["calibrate_on"].split("+")  # the OOD side: ood_val and/or val's generic corruptions
    for subset, transform in (("val", None), *((("ood_val", None),) if "ood_val" in against else ()),
                              *((("val", _corrupted(config)),) if CORRUPTIONS in against else ())):
        scores = Scores({n: {m: (stats[n][m], None) for m in MODALITIES} for n in todo})
        for features, _ in batches(call, manifest, subset, config, transform):
            scores.add(features)
        raw[CORRUPTIONS if transform else subset] = scores.result()
    for n in todo:
        out[n] = {}
        for m in MODALITIES:
            scores_out = [raw[k][n][m][0] for k in against]
            groups = np.repeat(against, [len(x) for x in scores_out]) if CORRUPTIONS in against else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                calibrator = detectors.fit_calibrator(raw["val"][n][m][0], np.concatenate(scores_out),
                                                      s["calibration"], out_groups=groups)
            for w in caught:
                log(f"warning: {n} ({m}) {w.message}")
            detectors.save(run.path, n, m, stats[n][m], calibrator, s)
            out[n][m] = (stats[n][m], calibrator)
        log(f"{run.path}: fitted {n} ({s['calibration']} calibration of {sizes['val']} val patches against "
            f"{' and '.join(_AGAINST[k].format(**sizes) for k in against)}), saved in {run.file(DETECTORS)}")
    return {n: out[n] for n in names}


def gate_layers(run: Run, fitted: dict | None = None, heads=None) -> tuple:
    """(optical, SAR) gates of the run's `ood.detector` for ``build_adaptive_model``: per modality
    the tuple of its members' p layers (`tf_fusion.gate`; one member: the detector alone).
    ``fitted``: ``fit_run``'s output for the post-hoc members (else loaded); ``heads``: the
    binary heads (head_opt, head_sar) when already at hand (else loaded)."""
    spec = gate.parse(run.config["ood"]["detector"])
    per_name = {n: heads if n == registry.BINARY_HEAD and heads is not None else layers(run, n, (fitted or {}).get(n))
                for n in gate.detectors(spec)}
    return tuple(tuple(per_name[n][i] for n in spec[m]) for i, m in enumerate(MODALITIES))


def layers(run: Run, name: str, fitted: dict | None = None) -> tuple:
    """(optical, SAR) p layers of detector ``name`` for ``build_adaptive_model``: the run's
    binary heads, or ``DetectorProbability`` layers of the fitted post-hoc detector (``fitted``:
    ``fit_run``'s entry for it; else loaded, a one-line RunError when it is not fitted)."""
    if name == registry.BINARY_HEAD:
        heads = run.ood_heads()
        if heads is None:
            raise RunError(f"{run.path}: no OOD heads (ood_opt.keras, ood_sar.keras); train them first: "
                           f"python -m tf_fusion.ood --run {run.path}")
        return tuple(heads[m][0] for m in MODALITIES)
    s = settings(run.config)
    fitted = fitted or {m: detectors.load(run.path, name, m, s) for m in MODALITIES}
    return tuple(detectors.DetectorProbability.from_fitted(name, *fitted[m], name=f"p_{m}_{name}")
                 for m in MODALITIES)
