# diffxai: explain image classifiers with diffusion models, as one DAG.
# Read config.yaml (documented by src/diffxai/config/schema.yaml) for what runs.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"


rule all:
    input:
        all_targets(),
    default_target: True
    localrule: True


include: "rules/data.smk"
include: "rules/train.smk"
