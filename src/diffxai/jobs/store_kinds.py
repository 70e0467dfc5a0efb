"""Kinds of the stores that light jobs (no torch) read: the marker :func:`diffxai.store.open_store`
checks, so a job handed the wrong store fails on opening it."""

EXPLANATIONS = "explanations"  # shard and gathered stores of jobs.explain / jobs.gather_explanations
ATTRIBUTIONS = "attributions"  # maps stores of jobs.attribute
