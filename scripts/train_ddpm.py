"""Snakemake entry point of rule train_ddpm (logic: diffxai.jobs.train_ddpm)."""

from diffxai.jobs import train_ddpm
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_job import ModelJob

device = setup_job(snakemake.log[0], snakemake.threads, snakemake.params.device)  # noqa: F821
train_ddpm.run(ModelJob.from_snakemake(snakemake, device), snakemake.params.cache)  # noqa: F821
