"""Keras side: pipeline, fusion model, trainer, OOD heads, evaluation, export."""
