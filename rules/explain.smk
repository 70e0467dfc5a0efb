rule explain_shard:
    input:
        unpack(explain_inputs),
    output:
        directory(f"{R}/{{dataset}}/{{method}}/{{run}}/shards/{{shard}}.zarr"),
    log:
        f"{R}/logs/explain/{{dataset}}/{{method}}/{{run}}/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/explain/{{dataset}}/{{method}}/{{run}}/{{shard}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        spec=explanation_spec,
        # the run's seed, not the shard's: results do not depend on the shard count
        seed=lambda wildcards: derive_seed(
            config["seed"], wildcards.dataset, wildcards.method, wildcards.run
        ),
        device=DEVICE,
        code=lambda wildcards: method_code(
            "diffxai.jobs.explain", explanation_spec(wildcards)
        ),
    script:
        "../scripts/explain_shard.py"


rule gather_explanations:
    input:
        shards=lambda wildcards: [
            f"{R}/{wildcards.dataset}/{wildcards.method}/{wildcards.run}/shards/{s}.zarr"
            for s in range(config["explanations"][wildcards.method]["shards"])
        ],
    output:
        directory(f"{R}/{{dataset}}/{{method}}/{{run}}/explanations.zarr"),
    log:
        f"{R}/logs/gather_explanations/{{dataset}}/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/gather_explanations/{{dataset}}/{{method}}/{{run}}.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        info=lambda wildcards: {
            "dataset": wildcards.dataset,
            "method": wildcards.method,
            "run": wildcards.run,
            "spec": explanation_spec(wildcards),
        },
        code=source_hash("diffxai.jobs.gather_explanations"),
    script:
        "../scripts/gather_explanations.py"


rule cf_metrics:
    input:
        unpack(cf_metrics_inputs),
    output:
        metrics=f"{R}/{{dataset}}/{{method}}/{{run}}/metrics.json",
        csv=f"{R}/{{dataset}}/{{method}}/{{run}}/metrics.csv",
    log:
        f"{R}/logs/cf_metrics/{{dataset}}/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/cf_metrics/{{dataset}}/{{method}}/{{run}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        # what the job computes with; the models it names arrive as inputs
        settings={
            key: config["counterfactual_metrics"][key]
            for key in (
                "inception_weights",
                "lpips_weights",
                "cout_steps",
                "sfid_splits",
            )
        },
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "classifier": config["explanations"][wildcards.method]["classifier"],
            "method": wildcards.method,
            "run": wildcards.run,
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.cf_metrics"),
    script:
        "../scripts/cf_metrics.py"


rule diversity:
    input:
        runs=lambda wildcards: [
            f"{R}/{wildcards.dataset}/{wildcards.method}/{run}/explanations.zarr"
            for run in run_names(wildcards.method)
        ],
    output:
        metrics=f"{R}/{{dataset}}/{{method}}/diversity.json",
        csv=f"{R}/{{dataset}}/{{method}}/diversity.csv",
    log:
        f"{R}/logs/diversity/{{dataset}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/diversity/{{dataset}}/{{method}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPU,
    params:
        lpips_weights=config["counterfactual_metrics"]["lpips_weights"],
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "classifier": config["explanations"][wildcards.method]["classifier"],
            "method": wildcards.method,
            "run": "all",
        },
        device=DEVICE,
        code=source_hash("diffxai.jobs.diversity"),
    script:
        "../scripts/diversity.py"
