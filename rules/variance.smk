rule variance_sample:
    input:
        unpack(variance_sample_inputs),
    output:
        directory(f"{R}/{{dataset}}/variance/{{variance}}/{{feature}}/samples.zarr"),
    log:
        f"{R}/logs/variance_sample/{{dataset}}/{{variance}}/{{feature}}.log",
    benchmark:
        f"{R}/benchmarks/variance_sample/{{dataset}}/{{variance}}/{{feature}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=GPU,
    params:
        feature=variance_feature,
        sampling=variance_sampling,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.variance_sample"),
    script:
        "../scripts/variance_sample.py"


rule variance_scores:
    input:
        unpack(variance_scores_inputs),
    output:
        scores=f"{R}/{{dataset}}/variance/{{variance}}/scores.json",
        table=f"{R}/{{dataset}}/variance/{{variance}}/table.md",
        local_scores=f"{R}/{{dataset}}/variance/{{variance}}/local_scores.png",
        constraint=f"{R}/{{dataset}}/variance/{{variance}}/constraint.png",
        samples=f"{R}/{{dataset}}/variance/{{variance}}/samples.png",
        predictions=directory(f"{R}/{{dataset}}/variance/{{variance}}/predictions.zarr"),
    log:
        f"{R}/logs/variance_scores/{{dataset}}/{{variance}}.log",
    benchmark:
        f"{R}/benchmarks/variance_scores/{{dataset}}/{{variance}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU,
    params:
        features=lambda wildcards: config["variance"][wildcards.variance]["features"],
        settings=lambda wildcards: {
            key: config["variance"][wildcards.variance][key]
            for key in ("bootstrap", "coverage_k", "min_accepted")
        },
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "analysis": wildcards.variance,
            "classifier": config["variance"][wildcards.variance]["classifier"],
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.variance_scores"),
    script:
        "../scripts/variance_scores.py"
