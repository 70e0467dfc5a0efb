"""diffxai: explaining image classifiers with diffusion models, as one Snakemake workflow."""

__version__ = "0.1.0"
