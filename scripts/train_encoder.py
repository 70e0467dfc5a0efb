"""Snakemake entry point of rule train_encoder (logic: diffxai.jobs.train_encoder)."""

from diffxai.jobs import train_encoder
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_job import ModelJob

device = setup_job(snakemake.log[0], snakemake.threads, snakemake.params.device)  # noqa: F821
train_encoder.run(ModelJob.from_snakemake(snakemake, device))  # noqa: F821
