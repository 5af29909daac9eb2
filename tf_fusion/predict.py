"""`python -m tf_fusion.predict --model DIR (--s2 PATCH --s1 PATCH | --pairs CSV | --root ARCHIVE) [--out F]`.

Runs an exported SavedModel (`tf_fusion.export`) on BigEarthNet-layout GeoTIFF pairs, or on one
modality alone (the other gets availability 0, so the prediction rests on the given one), and
writes, per pair, the predicted class names, every class probability, p_o and p_s (the OOD
detectors' probabilities that the optical / SAR input is in-distribution), entropy, confidence
and a plain-words note when a modality is missing or looks out of distribution.

Inputs: `--s2`/`--s1` patch folders (`<dir>/<name>_<BAND>.tif`); `--pairs CSV` with columns
`s2,s1` (patch folders, relative to the CSV's folder; one may be empty); `--root` a v1 archive
(`BigEarthNet-v1.0/` + `BigEarthNet-S1-v1.0/`, or any two folders of S2 and S1 patch folders, paired
through the S1 JSON's `corresponding_s2_patch`) or a v2 archive (`BigEarthNet-S2/` +
`BigEarthNet-S1/`, paired through `metadata.parquet` and the snow/cloud parquet beside it). A pair
with a missing or bad file gets a one-line error naming it and the run goes on; the failures are
listed again at the end (exit 1).
"""
from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np

from tfrecords_builder import BadPair, MetadataError, Pair, find_pairs

from . import cli, serving

BATCH_SIZE = 32


class PredictError(ValueError):
    """The model or the list of pairs is unusable as a whole (not one bad pair)."""


# ------------------------------------------------------------------------------ finding pairs
def pairs_from_csv(path) -> list[Pair]:
    """`s2,s1` rows (header optional; either column may be empty); paths relative to the CSV."""
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except OSError as e:
        raise PredictError(f"--pairs {path}: cannot read ({e.strerror})") from None
    if rows and [c.strip().lower() for c in rows[0]] == ["s2", "s1"]:
        rows = rows[1:]
    pairs = []
    for lineno, row in enumerate(rows, 1):
        cells = [c.strip() for c in row] + [""] * (2 - len(row))
        if len(row) > 2 or not any(cells[:2]):
            raise PredictError(f"--pairs {path}: row {lineno}: expected 's2_folder,s1_folder' (one may be empty), got {row}")
        s2, s1 = (os.path.join(base, c) if c else None for c in cells[:2])
        pairs.append(Pair(s2, s1))
    if not pairs:
        raise PredictError(f"--pairs {path}: no rows")
    return pairs


# ------------------------------------------------------------------------------ the model
def resolve_model_dir(model_dir) -> str:
    """A version folder (holding saved_model.pb), or a MODEL_BASE: its highest numeric version."""
    model_dir = os.fspath(model_dir)
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    versions = sorted((int(d) for d in os.listdir(model_dir) if d.isdigit()
                       and os.path.exists(os.path.join(model_dir, d, "saved_model.pb")))) if os.path.isdir(model_dir) else []
    if not versions:
        raise PredictError(f"--model {model_dir}: no saved_model.pb there or in a numeric version folder "
                           f"(export one with python -m tf_fusion.export --run RUN --out {model_dir}/1)")
    return os.path.join(model_dir, str(versions[-1]))


class Model:
    """An exported model loaded with `tf.saved_model.load`: its `serving_default` signature,
    class names."""

    def __init__(self, model_dir):
        import tensorflow as tf

        from .export import CLASS_NAMES_FILE

        self.dir = resolve_model_dir(model_dir)
        self._loaded = tf.saved_model.load(self.dir)  # keeps the variables the signature uses alive
        # GeoTIFFs hold the S2 bands as uint16: the uint16 signature takes them without a cast
        if serving.SIGNATURE_RAW_UINT16 not in self._loaded.signatures:
            raise PredictError(f"{self.dir}: no {serving.SIGNATURE_RAW_UINT16!r} signature (has "
                               f"{list(self._loaded.signatures)}); not a tf_fusion.export model")
        self.signature = self._loaded.signatures[serving.SIGNATURE_RAW_UINT16]
        assets = os.path.join(self.dir, "assets")
        with open(os.path.join(assets, CLASS_NAMES_FILE), encoding="utf-8") as f:
            self.class_names = [line.rstrip("\n") for line in f if line.strip()]

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        """Batch-first raw inputs, S2 as uint16 (checked by `serving.check_inputs`) → output name → array."""
        x = serving.check_inputs(inputs, serving.SIGNATURE_RAW_UINT16)
        return {k: v.numpy() for k, v in self.signature(**x).items()}


# ------------------------------------------------------------------------------ running
def predict_pairs(model: Model, pairs, *, batch_size: int = BATCH_SIZE, ood_threshold: float = 0.5,
                  progress: bool = True, err=None) -> tuple[list[dict], list[str]]:
    """(one result row per readable pair, one error line per pair that could not be read)."""
    from tqdm import tqdm

    err = err or sys.stderr
    rows, errors = [], []
    bar = tqdm(total=len(pairs), unit="pair", desc="predict", disable=not progress or len(pairs) <= batch_size,
               dynamic_ncols=True, mininterval=0.5, file=err)

    def run(batch):
        if not batch:
            return
        inputs = serving.stack_samples([s for _, s in batch])
        described = serving.describe(model(inputs), model.class_names, inputs, ood_threshold)
        for (pair, _), row in zip(batch, described):
            rows.append({"s2_patch": pair.s2_name, "s1_patch": pair.s1_name, **row})

    batch = []
    for pair in pairs:
        try:
            batch.append((pair, serving.read_pair(pair.s2_dir, pair.s1_dir)))
        except BadPair as e:
            errors.append(f"{pair.name}: {e}")
            bar.write(f"error: {errors[-1]}", file=err)
        if len(batch) == batch_size:
            run(batch)
            batch = []
        bar.update(1)
    run(batch)
    bar.close()
    return rows, errors


def write_results(rows, errors, out, class_names, model_dir) -> None:
    """`.json`: {"model", "results", "errors"}; `.csv`: one row per pair, one column per class."""
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".json"):
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"model": model_dir, "class_names": class_names, "results": rows, "errors": errors}, f, indent=1)
        return
    fields = ["s2_patch", "s1_patch", "labels", "p_o", "p_s", "entropy", "confidence", "note", *class_names]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: row[k] for k in fields[:8]}, "labels": "; ".join(row["labels"]),
                             **row["probabilities"]})


def _print_rows(rows) -> None:
    for row in rows:
        name = " / ".join(n for n in (row["s2_patch"], row["s1_patch"]) if n)
        top = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{name}: {', '.join(row['labels']) or '(no class above the threshold)'}")
        print(f"  p_o {row['p_o']:.3f}  p_s {row['p_s']:.3f}  entropy {row['entropy']:.3f}  confidence "
              f"{row['confidence']:.3f}  top: {', '.join(f'{c} {p:.2f}' for c, p in top)}")
        if row["note"]:
            print(f"  note: {row['note']}")


def parse_args(argv=None):
    p = cli.parser("tf_fusion.predict", "Predict BigEarthNet GeoTIFF pairs (or one modality alone) with an exported "
                   "SavedModel: classes, probabilities, p_o/p_s and a plain-words note per pair.",
                   "python -m tf_fusion.predict --model runs/demo/export --root BigEarthNet-v1.0-sample --out predictions.csv",
                   "python -m tf_fusion.predict --model models/fusion/1 --s2 PATCH_S2_DIR --s1 PATCH_S1_DIR")
    p.add_argument("--model", required=True, help="an exported model: MODEL_BASE/VERSION, or MODEL_BASE (highest version)")
    p.add_argument("--s2", help="an S2 patch folder (<dir>/<name>_B02.tif ...)")
    p.add_argument("--s1", help="an S1 patch folder (<dir>/<name>_VV.tif, _VH.tif)")
    p.add_argument("--pairs", help="CSV of s2,s1 patch folders (header optional, one column may be empty)")
    p.add_argument("--root", help="a v1 or v2 BigEarthNet archive folder")
    p.add_argument("--metadata", help="v2: metadata.parquet (default ROOT/metadata.parquet)")
    p.add_argument("--out", help="results file, .csv or .json (default: print a summary)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--ood-threshold", type=float, default=0.5, help="p_o or p_s below this is flagged (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    sources = [bool(args.s2 or args.s1), bool(args.pairs), bool(args.root)]
    if sum(sources) != 1:
        p.error("give exactly one of --s2/--s1, --pairs, --root")
    if args.out and not args.out.endswith((".csv", ".json")):
        p.error(f"--out must end in .csv or .json; got {args.out}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be positive; got {args.batch_size}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.pairs:
            pairs, unpaired = pairs_from_csv(args.pairs), []
        elif args.root:
            pairs, unpaired = find_pairs(args.root, args.metadata)
        else:
            pairs, unpaired = [Pair(args.s2, args.s1)], []
        for line in unpaired:
            print(f"error: {line}", file=sys.stderr)
        model = Model(args.model)
    except (PredictError, MetadataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, failed = predict_pairs(model, pairs, batch_size=args.batch_size, ood_threshold=args.ood_threshold,
                                 progress=not args.quiet)
    errors = unpaired + failed
    if args.out:
        write_results(rows, errors, args.out, model.class_names, model.dir)
        print(f"{args.out}: {len(rows)} pairs predicted" + (f", {len(errors)} failed" if errors else ""))
    else:
        _print_rows(rows)
    if errors:
        print(f"{len(errors)} of {len(pairs) + len(unpaired)} patches failed:", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
