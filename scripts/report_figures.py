"""Snakemake entry point of rule report_figures (logic: diffxai.jobs.report_figures)."""

from diffxai.jobs import report_figures
from diffxai.jobs.common import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
report_figures.run(
    list(sm.params.entries),
    dict(sm.params.data),
    sm.input.metrics,
    sm.output.figures,
    sm.params.n_images,
    curves=dict(sm.params.curves),
    ablations=dict(sm.params.ablations),
)
report_figures.write_config(dict(sm.config), sm.output.config)
