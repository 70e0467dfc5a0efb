"""Snakemake entry point of rule train_supervised (logic: diffxai.jobs.train_supervised)."""

from diffxai.jobs import train_supervised
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_job import ModelJob

device = setup_job(snakemake.log[0], snakemake.threads, snakemake.params.device)  # noqa: F821
train_supervised.run(ModelJob.from_snakemake(snakemake, device))  # noqa: F821
