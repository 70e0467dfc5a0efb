# GCD (seed 001): each run's directions from its own source image, the globality of the
# first run's directions, then the summary across runs (sources, globality, BB-LIG vs BB-IG,
# efficiency).


rule gcd_directions:
    input:
        unpack(gcd_model_inputs),
    output:
        directory(f"{R}/{{dataset}}/{{method}}/{{run}}/directions.zarr"),
    log:
        f"{R}/logs/gcd_directions/{{dataset}}/{{method}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/gcd_directions/{{dataset}}/{{method}}/{{run}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        # only what shapes the directions: line-search settings re-run the CEs alone
        params=lambda wildcards: direction_params(
            config["explanations"][wildcards.method]["params"]
        ),
        lpips_weights=config["counterfactual_metrics"]["lpips_weights"],
        seed=lambda wildcards: gcd_run_seeds(wildcards)[-1],
        # the earlier runs' seeds: each run's source differs from theirs
        earlier_seeds=lambda wildcards: gcd_run_seeds(wildcards)[:-1],
        device=DEVICE,
        code=source_hash("diffxai.jobs.gcd_directions"),
    script:
        "../scripts/gcd_directions.py"


rule gcd_globality:
    input:
        unpack(gcd_globality_inputs),
    output:
        f"{R}/{{dataset}}/{{method}}/gcd_globality.json",
    log:
        f"{R}/logs/gcd_globality/{{dataset}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/gcd_globality/{{dataset}}/{{method}}.tsv"
    # one of the longest jobs, on no other job's path but the summary's: started as soon as the
    # first run's directions exist, it runs beside the rest instead of after it
    priority: 5
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        params=lambda wildcards: config["explanations"][wildcards.method]["params"],
        settings=lambda wildcards: {
            "globality": config["explanations"][wildcards.method]["globality"],
            "explained_images": config["explanations"][wildcards.method]["n_images"],
            "batch_size": config["explanations"][wildcards.method]["batch_size"],
            "lpips_weights": config["counterfactual_metrics"]["lpips_weights"],
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.gcd_globality"),
    script:
        "../scripts/gcd_globality.py"


rule gcd_summary:
    input:
        unpack(gcd_summary_inputs),
    output:
        metrics=f"{R}/{{dataset}}/{{method}}/gcd_summary.json",
        csv=f"{R}/{{dataset}}/{{method}}/gcd_summary.csv",
    log:
        f"{R}/logs/gcd_summary/{{dataset}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/gcd_summary/{{dataset}}/{{method}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        params=lambda wildcards: config["explanations"][wildcards.method]["params"],
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "classifier": config["explanations"][wildcards.method]["classifier"],
            "method": wildcards.method,
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.gcd_summary"),
    script:
        "../scripts/gcd_summary.py"
