"""`python -m tf_fusion.map --scenes scenes.csv --out DIR --runner direct|dataflow|flink|spark ...`: the map's
per-window code as an Apache Beam pipeline (the optional `scale` extra: `pip install -e ".[scale]"`).

The work is the in-process command's, cut where Beam can spread it: one element per block of
windows (scene, block index) not yet committed; a DoFn reads it (`map.Scene.read_block`, the files
opened once per worker and scene); Beam's `RunInference` with its TensorFlow model handler
(`TFModelHandlerTensor`, its `load_model` reading the exported SavedModel with
`tf.saved_model.load`, since Keras 3's `load_model` takes no SavedModel; shared, so loaded once per
worker process) answers it through `map.predict_block` (the same batches of `--batch` windows as
in-process, so the same numbers); the block is committed as OUT/NAME/.blocks/NNNNNN.npz; once
every block of a scene is there, its final files are written by `map._finish`. So the outputs are
byte-identical to the in-process command's, and a pipeline killed midway resumes from the blocks
it committed. OUT must be a filesystem every worker sees (a shared or mounted bucket folder).
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import map as mapping


def _require_beam():
    try:
        import apache_beam  # noqa: F401
        from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor  # noqa: F401
    except ImportError as e:
        raise mapping.MapError(f"--runner needs Apache Beam: pip install -e \".[scale]\" ({e})") from None


class _Names:
    """What `map._finish` needs of the model (no TensorFlow on the finishing worker)."""

    def __init__(self, model_dir: str):
        from .export import CLASS_NAMES_FILE
        from .predict import resolve_model_dir

        self.dir = resolve_model_dir(model_dir)
        with open(os.path.join(self.dir, "assets", CLASS_NAMES_FILE), encoding="utf-8") as f:
            self.class_names = [line.rstrip("\n") for line in f if line.strip()]


def _prepare(job: mapping.Job, names: _Names) -> list[tuple[str, int]]:
    """Write (or check) OUT/.blocks/job.json; the (out, block index) pairs still to do."""
    from . import atomic

    with mapping.open_scene(job) as scene:
        ident = mapping._identity(job, scene, names)
        blocks = mapping._blocks(scene.grid, job.block)
    blocks_dir = os.path.join(job.out, mapping.BLOCKS_DIR)
    job_path = os.path.join(blocks_dir, mapping.JOB_FILE)
    if os.path.exists(job_path):
        with open(job_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != ident:
            raise mapping.MapError(f"{job.out} holds the blocks of another map; use another --out or remove {blocks_dir}")
    else:
        os.makedirs(blocks_dir, exist_ok=True)
        atomic.write_json(job_path, ident)
    return [(job.out, i) for i in range(len(blocks)) if not os.path.exists(mapping._block_path(blocks_dir, i))]


def build_pipeline(pipeline, jobs: dict, model_dir: str):
    """The map of every job (out folder → `map.Job`) on `pipeline`; returns the final PCollection."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor

    names = _Names(model_dir)
    batch = {out: job.batch for out, job in jobs.items()}

    class SavedModelHandler(TFModelHandlerTensor):
        """Beam's TensorFlow handler loading our SavedModel's `serving_default` (map.MapModel)."""

        def load_model(self):
            return mapping.MapModel(self._model_uri)

    def infer(model, elements, inference_args=None, model_id=None):
        # one element = one block; predict_block batches its windows as the in-process command does
        for out, inputs in elements:
            yield PredictionResult((out, inputs), mapping.predict_block(model, inputs, batch[out]), model_id)

    class ReadBlock(beam.DoFn):
        def setup(self):
            self.scenes = {}

        def process(self, task):
            out, i = task
            if out not in self.scenes:
                self.scenes[out] = mapping.open_scene(jobs[out])
            scene = self.scenes[out]
            positions = mapping._blocks(scene.grid, jobs[out].block)[i]
            try:
                inputs = scene.read_block(positions)
            except mapping.BadBlock as e:
                if not jobs[out].skip_bad:
                    raise mapping.MapError(f"{out}: block {i}: read error in {e}; pass --skip-bad") from None
                inputs = mapping._nothing(len(positions))
                inputs["_bad"] = f"block {i}: {e}"
            yield (out, i), (out, inputs)

        def teardown(self):
            for scene in self.scenes.values():
                scene.close()

    def commit(keyed):
        from . import atomic

        (out, i), result = keyed
        res = dict(result.inference)
        _, inputs = result.example
        res["bad"] = np.asarray(inputs.get("_bad", ""))
        arrays = {k: np.asarray(v) for k, v in res.items()}
        path = mapping._block_path(os.path.join(out, mapping.BLOCKS_DIR), i)
        atomic.write_with(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
        return out, i

    def finish(keyed):
        out, _ = keyed
        job = jobs[out]
        with mapping.open_scene(job) as scene:
            ident = mapping._identity(job, scene, names)
            blocks = mapping._blocks(scene.grid, job.block)
            mapping._finish(job, scene, names, blocks, os.path.join(out, mapping.BLOCKS_DIR), ident)
        return out

    tasks = [t for out, job in jobs.items() for t in _prepare(job, names)]
    handler = KeyedModelHandler(SavedModelHandler(names.dir, inference_fn=infer, min_batch_size=1, max_batch_size=1))
    committed = (pipeline
                 | "Blocks" >> beam.Create(tasks or [("", -1)])
                 | "Drop placeholder" >> beam.Filter(lambda t: t[1] >= 0)
                 | "Read" >> beam.ParDo(ReadBlock())
                 | "RunInference" >> RunInference(handler)
                 | "Commit" >> beam.Map(commit))
    # every scene is finished once all its blocks are committed (also those committed by an earlier run)
    scenes = pipeline | "Scenes" >> beam.Create([(out, None) for out in jobs])
    return ((committed, scenes)
            | "Together" >> beam.Flatten()
            | "By scene" >> beam.GroupByKey()
            | "Finish" >> beam.Map(finish))


def run(jobs: list, model_dir: str, runner: str, beam_args: list[str], log=print) -> None:
    """Map `jobs` (`map.Job`) with Beam's `runner`; `beam_args`: more pipeline options (project, region, ...)."""
    _require_beam()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    runners = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}
    options = PipelineOptions([f"--runner={runners[runner]}", *beam_args])
    by_out = {}
    for job in jobs:
        by_out[os.path.abspath(job.out)] = mapping.Job(**{**job.__dict__, "out": os.path.abspath(job.out)})
    for out in by_out:
        os.makedirs(out, exist_ok=True)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, by_out, model_dir)
    for out in by_out:
        with open(os.path.join(out, mapping.SUMMARY), encoding="utf-8") as f:
            summary = json.load(f)
        log(f"{out}: {summary['windows_processed']} of {summary['windows']} windows mapped ({runner} runner)")
