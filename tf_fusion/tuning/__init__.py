"""KerasTuner search of the loss weights and the OOD-head sizes (`python -m tf_fusion.tune`).

`space` reads and checks the experiment's `tuning:` section, `hypermodels` holds the two
KerasTuner HyperModels (fusion network, OOD heads), `search` runs the two stages (resumable,
chief/worker distributable) and writes the best values as an experiment file.
"""
