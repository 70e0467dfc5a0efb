rule attribute:
    input:
        unpack(attribution_inputs),
    output:
        directory(f"{R}/{{dataset}}/attributions/{{attribution}}/maps.zarr"),
    log:
        f"{R}/logs/attribute/{{dataset}}/{{attribution}}.log",
    benchmark:
        f"{R}/benchmarks/attribute/{{dataset}}/{{attribution}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        spec=attribution_spec,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.attribute"),
    script:
        "../scripts/attribute.py"


rule attribution_metrics:
    input:
        unpack(attribution_inputs),
        store=f"{R}/{{dataset}}/attributions/{{attribution}}/maps.zarr",
    output:
        metrics=f"{R}/{{dataset}}/attributions/{{attribution}}/metrics.json",
        csv=f"{R}/{{dataset}}/attributions/{{attribution}}/metrics.csv",
    log:
        f"{R}/logs/attribution_metrics/{{dataset}}/{{attribution}}.log",
    benchmark:
        f"{R}/benchmarks/attribution_metrics/{{dataset}}/{{attribution}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        settings=lambda wildcards: attribution_metric_settings(wildcards.attribution),
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "classifier": config["attributions"][wildcards.attribution]["classifier"],
            "method": wildcards.attribution,
            "run": "maps",
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.attribution_metrics"),
    script:
        "../scripts/attribution_metrics.py"


rule ablation_point:
    input:
        unpack(ablation_inputs),
    output:
        f"{R}/{{dataset}}/ablations/{{ablation}}/{{setting}}.json",
    log:
        f"{R}/logs/ablation_point/{{dataset}}/{{ablation}}/{{setting}}.log",
    benchmark:
        f"{R}/benchmarks/ablation_point/{{dataset}}/{{ablation}}/{{setting}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        spec=ablation_spec,
        setting=lambda wildcards: ablation_settings(wildcards.ablation)[
            wildcards.setting
        ],
        # the explanation's seed for every point: points differ only in the parameter
        seed=lambda wildcards: derive_seed(
            config["seed"], wildcards.dataset, wildcards.ablation
        ),
        device=DEVICE,
        code=lambda wildcards: method_code(
            "diffxai.jobs.ablation", ablation_spec(wildcards)
        ),
    script:
        "../scripts/ablation_point.py"


rule ablation_table:
    input:
        points=lambda wildcards: [
            f"{R}/{wildcards.dataset}/ablations/{wildcards.ablation}/{setting}.json"
            for setting in ablation_settings(wildcards.ablation)
        ],
    output:
        csv=f"{R}/{{dataset}}/ablations/{{ablation}}/table.csv",
        markdown=f"{R}/{{dataset}}/ablations/{{ablation}}/table.md",
    log:
        f"{R}/logs/ablation_table/{{dataset}}/{{ablation}}.log",
    benchmark:
        f"{R}/benchmarks/ablation_table/{{dataset}}/{{ablation}}.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        title=lambda wildcards: f"{wildcards.ablation} on {wildcards.dataset}",
        parameters=lambda wildcards: list(
            config["ablations"][wildcards.ablation]["vary"]
        ),
        grid=lambda wildcards: config["ablations"][wildcards.ablation]["design"]
        == "grid",
        code=source_hash("diffxai.jobs.ablation_table"),
    script:
        "../scripts/ablation_table.py"
