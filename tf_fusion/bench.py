"""`python -m tf_fusion.bench SUBCOMMAND`: throughput figures of the Keras side.

pipeline: samples/s of `tf_fusion.data.make_dataset` (decode, resample to 120², normalise;
  training=False) over every subset of a synthetic v1 build, divided by samples/s of a
  per-sample rasterio read of the same pairs from the GeoTIFF archive, the way torchgeo's
  BigEarthNet dataset loads them (open the 12 S2 + 2 S1 files, `src.read(1, out_shape=(120, 120),
  resampling=Resampling.bilinear)` for the 20 m and 60 m bands, stack, normalise with the same
  statistics in NumPy). Both sides are timed after a warm-up pass (warm page cache); tf.data
  through one long-lived iterator, as a training loop uses it (a fresh iterator per 600-sample
  pass would mostly time the autotuner's ramp-up). The rasterio side gets the builder's GDAL
  settings (no folder listing on open), which only makes it faster. Goal: ratio >= 20.

train-step: one Eq. 2 training step (three weighted passes, branches once) / one fused-pass-only
  step, at every fusion stage, beside the bound 1 + 2 · (head FLOPs / total FLOPs) that sharing
  the branches allows (below stage 5 the head holds the trunk, run once per pass), one line per
  backbone and stage: `BACKBONE stage K: ratio R (bound B)`. Goal: R <= 1.1 · B.

predict: one adaptive forward pass (Eq. 3: encoders once, both OOD heads, the fusion head at three
  gate settings) / one non-adaptive forward pass (λ = (1, 1)), same batch, both traced
  tf.functions, interleaved rounds, min time. Goal: ratio <= 1.10.

detectors: the adaptive forward pass (Eq. 3, traced) with each post-hoc OOD detector computing p in
  the graph / the same with the paper's binary heads, same batch (tiny at 64, resnet50 at 16),
  interleaved rounds, min time; one line per detector, `DETECTOR: ratio R`, kNN's with its
  reference size and cost. Detectors fitted on random embeddings of the branch width (timing
  only). Goal: ratio <= 1.10, except kNN (R·D multiply-adds per sample, R the reference size).

serve: samples/s of the exported SavedModel's `serving_default` signature on raw bands (native
  resolution; input checks, resampling and normalisation in the graph) against the in-memory
  adaptive Keras model on already preprocessed 120² tensors, batch 64: the cost of in-graph
  preprocessing. The exported `preprocessed` signature is timed too (the SavedModel's own
  overhead). Untrained models; random bands with matching statistics.

map: windows/s of `python -m tf_fusion.map` on a synthetic scene (`synth-scene`: S2 per-band
  GeoTIFFs, S1 in EPSG:4326 warped onto the S2 grid; the whole command: reading, warping, the model,
  block commits, COG, labels, quicklook and summary) / windows/s of the same SavedModel's
  `serving_default` on the same windows already in memory (same batch), one line per backbone,
  `map: ratio R`: the cost of reading, resampling, warping and writing. Best of `--rounds`,
  interleaved. Untrained exported models (band statistics as for serve). Goal: R >= 0.67.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from tfrecords_builder import BAND_SIZE, S2_BANDS


def _prepare_build(work: str, pairs: int, seed: int):
    from tfrecords_builder import ensure_synthetic_build, load_manifest

    return load_manifest(ensure_synthetic_build(work, "v1", pairs, seed, workers=2, progress=False))


def rasterio_samples(pairs, s2_root: str, s1_root: str, stats: dict, size: int = 120):
    """Yield (s2 [size, size, 12], s1 [size, size, 2]) float32 per pair, torchgeo-style (one file at a time)."""
    import rasterio
    from rasterio.enums import Resampling

    from tfrecords_builder import GDAL_ENV, S1_BANDS, S2_BANDS, band_paths

    s2_mean = np.array([stats[b]["mean"] for b in S2_BANDS], np.float32)
    s2_std = np.array([stats[b]["std"] for b in S2_BANDS], np.float32)
    s1_mean = np.array([stats[b]["mean"] for b in S1_BANDS], np.float32)
    s1_std = np.array([stats[b]["std"] for b in S1_BANDS], np.float32)
    with rasterio.Env(**GDAL_ENV):
        for s2_name, s1_name in pairs:
            paths = band_paths(os.path.join(s2_root, s2_name), s2_name, os.path.join(s1_root, s1_name), s1_name)
            planes = {}
            for band, path in paths.items():
                with rasterio.open(path) as src:
                    if src.height == size and src.width == size:
                        planes[band] = src.read(1)
                    else:
                        planes[band] = src.read(1, out_shape=(size, size), resampling=Resampling.bilinear)
            s2 = np.stack([planes[b] for b in S2_BANDS], axis=-1).astype(np.float32)
            s1 = np.stack([planes[b] for b in S1_BANDS], axis=-1).astype(np.float32)
            yield (s2 - s2_mean) / s2_std, (s1 - s1_mean) / s1_std


def _agreement(data, manifest, subset, s1_of) -> None:
    """Print how far the two readers' outputs for one sample are apart (same work on both sides)."""
    inputs, _ = next(iter(data.make_dataset(manifest, subset, batch_size=1, include_names=True)))
    name = inputs["s2_name"].numpy()[0].decode()
    source = manifest["source"]
    s2, s1 = next(rasterio_samples([(name, s1_of[name])], source["s2_root"], source["s1_root"], manifest["band_stats"]))
    diff = np.abs(inputs["s2"].numpy()[0] - s2)
    native = [i for i, b in enumerate(S2_BANDS) if BAND_SIZE[b] == 120]
    other = [i for i in range(len(S2_BANDS)) if i not in native]
    print(f"agreement on {name}: max |tf - rasterio| 10 m bands {diff[..., native].max():.2g}, "
          f"S1 {np.abs(inputs['s1'].numpy()[0] - s1).max():.2g}; resampled 20/60 m bands: "
          f"mean {diff[..., other].mean():.2g}, max {diff[..., other].max():.2g} (GDAL vs TF bilinear)")


def _timed(run, passes: int) -> tuple[float, float, int]:
    """(samples/s, CPU ms per sample of this process, samples) of `run(passes)`, which returns the count."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = run(passes)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, 1e3 * cpu / n, n


def _interleaved(fns: dict, steps: int, rounds: int, finish) -> dict:
    """label → seconds per call in each round; the labels take turns within a round, so drift in
    machine load hits all alike. ``finish(last output)`` waits for the work to be done."""
    times = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = fn()
            finish(out)
            times[label].append((time.perf_counter() - start) / steps)
    return times


def bench_pipeline(args) -> int:
    from tfrecords_builder import iter_records

    from . import data

    work = args.dir or tempfile.mkdtemp(prefix="tf-fusion-bench-")
    try:
        manifest = _prepare_build(work, args.pairs, args.seed)
        subsets = [s for s in manifest["subsets"] if manifest.subset_size(s)]
        pairs = [(r["s2_name"], r["s1_name"]) for s in subsets for r in iter_records(manifest.dir, s)]
        n = len(pairs)
        print(f"pairs: {n} in subsets {', '.join(subsets)}; {os.cpu_count()} CPUs", flush=True)

        # One long-lived iterator, as a training loop has: tf.data's autotuner keeps its state.
        ds = data.make_dataset(manifest, subsets, batch_size=args.batch_size, training=False, repeat=True)
        iterator = iter(ds)
        per_pass = -(-n // args.batch_size)

        def run_tf(passes: int) -> int:
            count = 0
            for _ in range(passes * per_pass):
                inputs, _ = next(iterator)
                count += int(inputs["s2"].shape[0])
            return count

        run_tf(1)  # warm-up: tracing, thread pools, autotuning, page cache
        tf_rate, tf_cpu, _ = _timed(run_tf, args.passes)

        source = manifest["source"]

        def run_rasterio(passes: int) -> int:
            count = 0
            for _ in range(passes):
                for _ in rasterio_samples(pairs, source["s2_root"], source["s1_root"], manifest["band_stats"]):
                    count += 1
            return count

        run_rasterio(1)  # warm-up: page cache
        rio_rate, rio_cpu, _ = _timed(run_rasterio, max(1, args.passes - 1))
        _agreement(data, manifest, subsets[0], dict(pairs))
        print(f"tf.data pipeline (batch {args.batch_size}, 120x120 bilinear, normalised): "
              f"{tf_rate:8.1f} samples/s  ({tf_cpu:.2f} CPU ms/sample)")
        print(f"per-sample rasterio read (14 files, out_shape bilinear, normalised): "
              f"{rio_rate:8.1f} samples/s  ({rio_cpu:.2f} CPU ms/sample)")
        print(f"ratio = {tf_rate / rio_rate:.1f}  (goal >= 20)")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def forward_flops(model) -> int:
    """Multiply-adds × 2 of one sample's forward pass through the convolutions and dense layers
    of ``model`` (nested models included), from the layers' static shapes."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            total += 2 * kh * kw * layer.input.shape[-1] * c_out * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def bench_train_step(args) -> int:
    """One Eq. 2 step (three weighted passes: branches once, the fusion head with its trunk three
    times) / one fused-pass-only step, at every fusion stage, beside the bound that sharing the
    branches allows: 1 + 2 · (head FLOPs / total FLOPs)."""
    import keras
    import tensorflow as tf

    from .model import FusionModel

    rng = np.random.default_rng(0)
    stages = [int(k) for k in args.stages.split(",")]
    for backbone, batch, steps in (("resnet50", 8, args.steps_large), ("tiny", args.tiny_batch, args.steps_small)):
        if args.backbone and backbone != args.backbone:
            continue
        x = {"s2": tf.constant(rng.normal(size=(batch, 120, 120, 12)), tf.float32),
             "s1": tf.constant(rng.normal(size=(batch, 120, 120, 2)), tf.float32)}
        y = tf.constant(rng.integers(0, 2, (batch, 12)), tf.float32)
        for stage in stages:
            models = {}
            for label, weights in (("three", (2.0, 1.0, 1.0)), ("fused", (1.0, 0.0, 0.0))):
                keras.utils.set_random_seed(0)
                models[label] = FusionModel(backbone=backbone, num_classes=12, pass_weights=weights, fusion_stage=stage)
                models[label].compile(optimizer=keras.optimizers.Adam(1e-4))
                for _ in range(3):  # trace and warm up
                    models[label].train_on_batch(x, y)
            fns = {label: (lambda m=m: m.train_on_batch(x, y)) for label, m in models.items()}
            times = _interleaved(fns, steps, args.rounds, lambda out: None)
            ratio = min(times["three"]) / min(times["fused"])
            m = models["three"]
            head = forward_flops(m.fusion_head)
            total = forward_flops(m.encoder_opt) + forward_flops(m.encoder_sar) + head
            bound = 1 + 2 * head / total
            print(f"{backbone} stage {stage}: ratio {ratio:.3f} (bound {bound:.3f}); three-pass step "
                  f"{1e3 * min(times['three']):.1f} ms, fused-only {1e3 * min(times['fused']):.1f} ms, batch {batch}; "
                  f"head {head / 1e9:.3f} of {total / 1e9:.3f} GFLOPs per sample", flush=True)
        if not args.no_baselines:
            _baseline_steps(backbone, batch, stages[-1], x, y, steps, args.rounds)
    return 0


def _baseline_steps(backbone: str, batch: int, stage: int, x: dict, y, steps: int, rounds: int) -> None:
    """The step of every baseline with a model of its own (`tf_fusion.methods`, the DEFAULTS'
    settings), timed in turns with the gated network's Eq. 2 step (at ``stage``) and its
    fused-pass-only step (the late-fusion baseline)."""
    import keras

    from . import config as cfg
    from .methods import BASELINE_BY_NAME, BASELINES, GATED
    from .model import FusionModel, gate_inputs

    common = dict(backbone=backbone, num_classes=12, image_size=120, dropout=0.0)
    models = {}
    for label, weights in ((f"gated (Eq. 2, stage {stage})", (2.0, 1.0, 1.0)), ("fused pass only", (1.0, 0.0, 0.0))):
        keras.utils.set_random_seed(0)
        models[label] = FusionModel(pass_weights=weights, fusion_stage=stage, **common)
    for name in BASELINES:
        if BASELINE_BY_NAME[name].model_kind != GATED:
            keras.utils.set_random_seed(0)
            models[name] = BASELINE_BY_NAME[name].build(cfg.DEFAULTS, **common)
    xg = gate_inputs(x, 1.0, 1.0)
    for m in models.values():
        m.compile(optimizer=keras.optimizers.Adam(1e-4))
        for _ in range(3):  # trace and warm up
            m.train_on_batch(xg, y)
    times = _interleaved({label: (lambda m=m: m.train_on_batch(xg, y)) for label, m in models.items()},
                         steps, rounds, lambda out: None)
    ref = min(times[next(iter(models))])
    print(f"{backbone} batch {batch}, step per method: " + "; ".join(
        f"{label} {1e3 * min(t):.1f} ms ({min(t) / ref:.2f}×)" for label, t in times.items()), flush=True)


def bench_predict(args) -> int:
    """Adaptive prediction (Eq. 3: OOD heads + three gate settings, encoders once) / one
    non-adaptive prediction (the FusionModel with λ = (1, 1)), both as traced tf.functions."""
    import keras
    import tensorflow as tf

    from .adaptive import build_adaptive_model
    from .model import FusionModel, gate_inputs
    from .ood import build_ood_head

    rng = np.random.default_rng(0)
    default_batch = {"tiny": 64, "resnet18": 16, "resnet50": 16}
    for backbone in [args.backbone] if args.backbone else ["tiny", "resnet50"]:
        batch = args.batch_size or default_batch[backbone]
        keras.utils.set_random_seed(0)
        fusion = FusionModel(backbone=backbone, num_classes=12)
        heads = [build_ood_head(enc.output.shape[-1], name=name)
                 for enc, name in ((fusion.encoder_opt, "ood_opt"), (fusion.encoder_sar, "ood_sar"))]
        adaptive = build_adaptive_model(fusion, *heads)
        x = {"s2": tf.constant(rng.normal(size=(batch, 120, 120, 12)), tf.float32),
             "s1": tf.constant(rng.normal(size=(batch, 120, 120, 2)), tf.float32)}
        x_gated = gate_inputs(x, 1.0, 1.0)
        fns = {"adaptive": tf.function(lambda: adaptive(x, training=False)["probabilities"]),
               "non_adaptive": tf.function(lambda: fusion(x_gated, training=False)["probabilities"])}
        for fn in fns.values():  # trace and warm up
            for _ in range(2):
                fn().numpy()
        steps = args.steps or (40 if backbone == "tiny" else 5)
        times = _interleaved(fns, steps, args.rounds, lambda out: out.numpy())
        ta, tn = min(times["adaptive"]), min(times["non_adaptive"])
        print(f"{backbone:>8} batch {batch:>3}: adaptive {1e3 * ta:8.2f} ms, non-adaptive {1e3 * tn:8.2f} ms, "
              f"ratio = {ta / tn:.3f}  (goal <= 1.10)", flush=True)
    return 0


def _fitted_detectors(fusion, classes: int, settings: dict, rng) -> dict:
    """{name: (stats, calibrator)} of every post-hoc detector of the registry, fitted on random
    inputs of the widths the fusion model gives (embedding D, classifier input F) and on its
    classifier's weights (what the timing needs: the fitted shapes)."""
    import warnings

    from . import detector_registry as registry
    from . import detectors

    d = int(fusion.encoder_opt.output.shape[-1])
    classifier = detectors.classifier_weights(fusion)
    f = classifier[0].shape[0]
    n = max(4000, settings["knn_reference"])
    x, y, feats = rng.normal(size=(n, d)), rng.random((n, classes)) < 0.3, np.abs(rng.normal(size=(n, f)))
    x_out, logits = rng.normal(0.5, 1.5, size=(400, d)), rng.normal(0, 3, (400, classes))
    f_out = np.abs(rng.normal(0.5, 1.5, size=(400, f)))
    out = {}
    for name in registry.POST_HOC:
        stats = detectors.fit(name, x, y, settings, features=feats, logits=feats @ classifier[0] + classifier[1],
                              classifier=classifier)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a random score may rank OOD first: p constant, the same graph
            calibrator = detectors.fit_calibrator(detectors.raw_score(name, x[:400], logits, stats, feats[:400]),
                                                  detectors.raw_score(name, x_out, -logits, stats, f_out),
                                                  settings["calibration"])
        out[name] = (stats, calibrator)
    return out


def bench_detectors(args) -> int:
    """Adaptive forward with each post-hoc detector in the graph / with the binary heads."""
    import keras
    import tensorflow as tf

    from . import detector_registry as registry
    from . import detectors, gate
    from .adaptive import build_adaptive_model
    from .config import DEFAULTS
    from .model import FusionModel
    from .ood import build_ood_head

    rng = np.random.default_rng(0)
    default = DEFAULTS["ood"]["detector"]
    settings = detectors.resolve_settings({"knn_k": args.knn_k, "knn_reference": args.knn_reference})
    default_batch = {"tiny": 64, "resnet18": 16, "resnet50": 16}
    names = [n for n in registry.POST_HOC if not args.only or n in args.only.split(",")]
    for backbone in [args.backbone] if args.backbone else ["tiny", "resnet50"]:
        batch = args.batch_size or default_batch[backbone]
        keras.utils.set_random_seed(0)
        fusion = FusionModel(backbone=backbone, num_classes=12)
        d = int(fusion.encoder_opt.output.shape[-1])
        heads = [build_ood_head(enc.output.shape[1:], name=name)
                 for enc, name in ((fusion.encoder_opt, "ood_opt"), (fusion.encoder_sar, "ood_sar"))]
        models = {registry.BINARY_HEAD: build_adaptive_model(fusion, *heads)}
        layers = {}
        for name, fitted in _fitted_detectors(fusion, 12, settings, rng).items():
            if name not in names and name not in gate.detectors(default):
                continue
            layers[name] = [detectors.DetectorProbability.from_fitted(name, *fitted, name=f"p_{m}_{name}")
                            for m in ("optical", "sar")]
            if name in names:
                models[name] = build_adaptive_model(fusion, *layers[name])
        # the default gate: its members' p layers, combined by their minimum
        spec, members = gate.parse(default), {registry.BINARY_HEAD: heads, **layers}
        models[f"default gate {gate.label(spec)}"] = build_adaptive_model(
            fusion, *(tuple(members[n][i] for n in spec[m]) for i, m in enumerate(("optical", "sar"))))
        x = {"s2": tf.constant(rng.normal(size=(batch, 120, 120, 12)), tf.float32),
             "s1": tf.constant(rng.normal(size=(batch, 120, 120, 2)), tf.float32)}
        fns = {name: tf.function(lambda m=m: m(x, training=False)["probabilities"]) for name, m in models.items()}
        for fn in fns.values():  # trace and warm up
            for _ in range(2):
                fn().numpy()
        steps = args.steps or (20 if backbone == "tiny" else 3)
        times = _interleaved(fns, steps, args.rounds, lambda out: out.numpy())
        base = min(times[registry.BINARY_HEAD])
        f = detectors.classifier_weights(fusion)[0].shape[0]
        print(f"{backbone} batch {batch}: adaptive forward with the binary heads {1e3 * base:.2f} ms "
              f"(embedding width D = {d}, classifier input F = {f})", flush=True)
        r = settings["knn_reference"]
        for name in names:
            extra = ""
            if name == "knn":
                extra = (f" (reference R = {r} embeddings × D = {d}: {r * d / 1e6:.2f} M multiply-adds and a top-{settings['knn_k']} "
                         f"over {r} per sample per modality; a {4 * r * d / 2 ** 20:.1f} MiB float32 constant per modality)")
            if name == "vim":
                k = registry.DETECTORS["vim"].dim(f)
                extra = f" (basis F = {f} × {k}: {2 * f * k / 1e6:.2f} M multiply-adds per sample per modality)"
            print(f"{name}: ratio {min(times[name]) / base:.3f}{extra}", flush=True)
        name = f"default gate {gate.label(spec)}"
        print(f"{name}: ratio {min(times[name]) / base:.3f}", flush=True)
    return 0


def _band_stats() -> dict:
    """Plausible per-band statistics (what export needs of a manifest)."""
    stats = {b: {"mean": 1000.0 + 50 * i, "std": 600.0} for i, b in enumerate(S2_BANDS)}
    stats.update(VV={"mean": -12.0, "std": 5.0}, VH={"mean": -19.0, "std": 5.0})
    return stats


def _raw_batch(rng, band_stats: dict, batch: int) -> dict:
    """Random request inputs of `serving_default`: bands at native size around the statistics."""
    out = {}
    for band, stats in band_stats.items():
        x = rng.normal(stats["mean"], stats["std"], (batch, BAND_SIZE[band], BAND_SIZE[band]))
        out[band] = np.clip(x, 0, 10000).astype(np.float32).round() if band in S2_BANDS else x.astype(np.float32)
    out["optical_available"] = np.ones(batch, np.float32)
    out["sar_available"] = np.ones(batch, np.float32)
    return out


def bench_serve(args) -> int:
    """Exported `serving_default` on raw bands / in-memory adaptive Keras model on preprocessed tensors."""
    import keras
    import tensorflow as tf

    from . import serving
    from .adaptive import build_adaptive_model
    from .data import make_preprocess_fn
    from .export import export_model
    from .model import FusionModel
    from .ood import build_ood_head

    rng = np.random.default_rng(0)
    band_stats = _band_stats()
    batch = args.batch_size
    raw = {k: tf.constant(v) for k, v in _raw_batch(rng, band_stats, batch).items()}
    pre = make_preprocess_fn(band_stats)({b: raw[b] for b in band_stats})
    flags = {f: tf.reshape(raw[f], [-1, 1]) for f in serving.FLAGS}
    work = tempfile.mkdtemp(prefix="tf-fusion-bench-serve-")
    try:
        for backbone in [args.backbone] if args.backbone else ["tiny", "resnet50"]:
            keras.utils.set_random_seed(0)
            fusion = FusionModel(backbone=backbone, num_classes=12)
            heads = [build_ood_head(enc.output.shape[-1], name=name)
                     for enc, name in ((fusion.encoder_opt, "ood_opt"), (fusion.encoder_sar, "ood_sar"))]
            adaptive = build_adaptive_model(fusion, *heads, with_availability=True)
            out = export_model(adaptive, band_stats, os.path.join(work, backbone, "1"),
                               class_names=[f"c{i}" for i in range(12)], log=lambda *_: None)
            loaded = tf.saved_model.load(out)  # kept: its variables live as long as it does
            signatures = loaded.signatures
            pre_flags = {**pre, **{f: raw[f] for f in serving.FLAGS}}
            fns = {"keras": tf.function(lambda: adaptive({**pre, **flags}, training=False)),
                   "exported_preprocessed": lambda: signatures[serving.SIGNATURE_PREPROCESSED](**pre_flags),
                   "exported_raw": lambda: signatures[serving.SIGNATURE_RAW](**raw)}
            first = {label: fn()["probabilities"].numpy() for label, fn in fns.items()}  # trace and warm up
            gap = max(np.abs(first[k] - first["keras"]).max() for k in ("exported_raw", "exported_preprocessed"))
            steps = args.steps or (20 if backbone == "tiny" else 2)
            times = _interleaved(fns, steps, args.rounds, lambda out: out["probabilities"].numpy())
            rate = {label: batch / min(t) for label, t in times.items()}
            print(f"{backbone:>8} batch {batch}: in-memory Keras on preprocessed {rate['keras']:8.1f} samples/s, "
                  f"exported `preprocessed` {rate['exported_preprocessed']:8.1f}, exported `serving_default` on raw "
                  f"bands {rate['exported_raw']:8.1f}; raw / Keras = {rate['exported_raw'] / rate['keras']:.3f} "
                  f"(max |difference| of the probabilities {gap:.1g})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_map(args) -> int:
    """The map command's windows/s / the SavedModel's windows/s on the same windows in memory."""
    import keras

    from . import scene_map as mapping
    from .adaptive import build_adaptive_model
    from .export import export_model
    from .model import FusionModel
    from .ood import build_ood_head
    from tfrecords_builder import write_scene

    band_stats = _band_stats()
    work = args.dir or tempfile.mkdtemp(prefix="tf-fusion-bench-map-")
    sizes = {"tiny": 2400, "resnet18": 1200, "resnet50": 1200}
    try:
        for backbone in [args.backbone] if args.backbone else ["tiny", "resnet50"]:
            size = args.size or sizes[backbone]
            scene = os.path.join(work, f"scene-{size}")
            if not os.path.exists(os.path.join(scene, "scene.json")):
                write_scene(scene, size, seed=0)
            keras.utils.set_random_seed(0)
            fusion = FusionModel(backbone=backbone, num_classes=12)
            heads = [build_ood_head(enc.output.shape[-1], name=name)
                     for enc, name in ((fusion.encoder_opt, "ood_opt"), (fusion.encoder_sar, "ood_sar"))]
            adaptive = build_adaptive_model(fusion, *heads, with_availability=True)
            model_dir = os.path.join(work, backbone, "1")
            if not os.path.exists(model_dir):
                export_model(adaptive, band_stats, model_dir, class_names=[f"c{i}" for i in range(12)],
                             log=lambda *_: None)
            model = mapping.MapModel(model_dir)
            job = lambda r: mapping.Job(os.path.join(scene, "s2"), os.path.join(scene, "s1"),  # noqa: E731
                                        os.path.join(work, f"map-{backbone}-{r}"), batch=args.batch)
            with mapping.open_scene(job(0)) as opened:
                positions = [(r, c) for r in range(opened.grid.rows) for c in range(opened.grid.cols)]
                inputs = opened.read_block(positions)
            n = len(positions)
            mapping.predict_block(model, {k: v[:args.batch] for k, v in inputs.items()}, args.batch)  # warm up
            model_s, map_s = [], []
            for r in range(args.rounds):
                t = time.perf_counter()
                mapping.predict_block(model, inputs, args.batch)
                model_s.append(time.perf_counter() - t)
                shutil.rmtree(job(r).out, ignore_errors=True)
                t = time.perf_counter()
                mapping.map_scene(job(r), model, progress=False, log=lambda *_: None)
                map_s.append(time.perf_counter() - t)
            rate_model, rate_map = n / min(model_s), n / min(map_s)
            print(f"{backbone:>8} {size} x {size} px scene, {n} windows, batch {args.batch}: map command "
                  f"{rate_map:7.1f} windows/s, SavedModel on the windows in memory {rate_model:7.1f} windows/s", flush=True)
            print(f"map: ratio {rate_map / rate_model:.3f}  ({backbone}; goal >= 0.67)", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_fusion.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("pipeline", help="tf.data samples/s vs a per-sample rasterio read (goal >= 20x)")
    pl.add_argument("--pairs", type=int, default=600, help="pairs in the synthetic archive (default 600)")
    pl.add_argument("--batch-size", type=int, default=32, help="default 32, the experiments' default data.batch_size")
    pl.add_argument("--passes", type=int, default=3, help="timed passes after the warm-up (default 3; rasterio: one fewer)")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--dir", help="work folder, kept and reused (default: a temporary one)")
    pl.set_defaults(func=bench_pipeline)
    ts = sub.add_parser("train-step", help="Eq. 2 step / fused-pass-only step per fusion stage, beside the FLOPs bound")
    ts.add_argument("--backbone", choices=("tiny", "resnet50"), help="one backbone (default: resnet50, then tiny)")
    ts.add_argument("--stages", default="1,2,3,4,5", help="fusion stages (default 1,2,3,4,5)")
    ts.add_argument("--tiny-batch", type=int, default=32, help="batch for the tiny backbone (resnet50 uses 8)")
    ts.add_argument("--steps-large", type=int, default=5, help="timed steps per round, resnet50")
    ts.add_argument("--steps-small", type=int, default=30, help="timed steps per round, tiny")
    ts.add_argument("--rounds", type=int, default=3)
    ts.add_argument("--no-baselines", action="store_true",
                    help="skip the baselines' step times (every tf_fusion.methods baseline with its own model)")
    ts.set_defaults(func=bench_train_step)
    pr = sub.add_parser("predict", help="adaptive (Eq. 3) forward pass / non-adaptive forward pass (goal <= 1.10)")
    pr.add_argument("--backbone", choices=("tiny", "resnet18", "resnet50"),
                    help="one backbone (default: tiny at batch 64, then resnet50 at batch 16)")
    pr.add_argument("--batch-size", type=int, help="batch size (default 64 for tiny, 16 for resnet50)")
    pr.add_argument("--steps", type=int, help="timed forward passes per round (default 40 tiny, 5 otherwise)")
    pr.add_argument("--rounds", type=int, default=5)
    pr.set_defaults(func=bench_predict)
    dt = sub.add_parser("detectors", help="adaptive forward with each post-hoc detector / with the binary heads "
                                          "(goal <= 1.10 except kNN)")
    dt.add_argument("--backbone", choices=("tiny", "resnet18", "resnet50"),
                    help="one backbone (default: tiny at batch 64, then resnet50 at batch 16)")
    dt.add_argument("--batch-size", type=int, help="batch size (default 64 for tiny, 16 for resnet50)")
    dt.add_argument("--knn-k", type=int, default=10, help="kNN's k (default 10, ood.knn_k's default)")
    dt.add_argument("--knn-reference", type=int, default=2000,
                    help="kNN's reference size (default 2000, ood.knn_reference's default)")
    dt.add_argument("--only", metavar="NAME,...", help="these post-hoc detectors only (default: all the registry's)")
    dt.add_argument("--steps", type=int, help="timed forward passes per round (default 20 tiny, 3 otherwise)")
    dt.add_argument("--rounds", type=int, default=5)
    dt.set_defaults(func=bench_detectors)
    sv = sub.add_parser("serve", help="exported signature on raw bands vs in-memory Keras on preprocessed tensors")
    sv.add_argument("--backbone", choices=("tiny", "resnet18", "resnet50"),
                    help="one backbone (default: tiny, then resnet50)")
    sv.add_argument("--batch-size", type=int, default=64)
    sv.add_argument("--steps", type=int, help="timed calls per round (default 20 tiny, 2 otherwise)")
    sv.add_argument("--rounds", type=int, default=5)
    sv.set_defaults(func=bench_serve)
    mp = sub.add_parser("map", help="map command windows/s / SavedModel windows/s on the same windows in memory "
                                    "(goal >= 0.67)")
    mp.add_argument("--backbone", choices=("tiny", "resnet18", "resnet50"), help="one backbone (default: tiny, then resnet50)")
    mp.add_argument("--size", type=int, help="scene size in px, a multiple of 120 (default 2400 tiny, 1200 otherwise)")
    mp.add_argument("--batch", type=int, default=32, help="windows per model call (default 32, the map's default)")
    mp.add_argument("--rounds", type=int, default=2)
    mp.add_argument("--dir", help="work folder, kept and reused (default: a temporary one)")
    mp.set_defaults(func=bench_map)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
