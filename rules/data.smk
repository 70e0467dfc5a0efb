rule prepare_data:
    input:
        lambda wildcards: source_files(config["datasets"][wildcards.dataset]),
    output:
        directory(f"{R}/{{dataset}}/data.zarr"),
    log:
        f"{R}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_data/{{dataset}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    params:
        cfg=lambda wildcards: config["datasets"][wildcards.dataset],
        code=lambda wildcards: dataset_code(wildcards.dataset),
    script:
        "../scripts/prepare_data.py"
