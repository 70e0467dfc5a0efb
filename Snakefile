# diffxai: explain image classifiers with diffusion models, as one DAG.
# config.yaml says what runs; src/diffxai/config/schema.yaml documents every key.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml unless config files are named (--configfile): then those files, merged in order,
# are the whole config (an overlay names config.yaml first), so a standalone config of one's
# own data and methods does not inherit the default's datasets and methods
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    dataset=names_of(config["datasets"]),
    method=EXPLANATIONS,
    attribution=ATTRIBUTIONS,
    ablation=ABLATIONS,
    analysis=INTERPRETABLE,
    tokens=DISTILLS,
    variance=VARIANCES,
    feature="[A-Za-z][A-Za-z0-9_]*",
    setting="[A-Za-z_]+=[^/]+",
    run="run[0-9]+",
    shard="[0-9]+",


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/explain.smk"
include: "rules/attribute.smk"
include: "rules/gcd.smk"
include: "rules/interpretable.smk"
include: "rules/time.smk"
include: "rules/variance.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
    localrule: True
