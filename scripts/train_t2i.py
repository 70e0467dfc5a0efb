"""Snakemake entry point of rule train_t2i (logic: diffxai.jobs.train_t2i)."""

from diffxai.jobs import train_t2i
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_job import ModelJob

device = setup_job(snakemake.log[0], snakemake.threads, snakemake.params.device)  # noqa: F821
train_t2i.run(ModelJob.from_snakemake(snakemake, device), snakemake.params.cache)  # noqa: F821
