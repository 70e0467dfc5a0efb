rule hit_summary:
    input:
        unpack(hit_summary_inputs),
    output:
        summary=f"{R}/{{dataset}}/interpretable/{{analysis}}/summary.json",
        table=f"{R}/{{dataset}}/interpretable/{{analysis}}/table.md",
    log:
        f"{R}/logs/hit_summary/{{dataset}}/{{analysis}}.log",
    benchmark:
        f"{R}/benchmarks/hit_summary/{{dataset}}/{{analysis}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        settings=lambda wildcards: {
            key: config["interpretable"][wildcards.analysis][key]
            for key in ("n_images", "batch_size")
        },
        labels=lambda wildcards: {
            "dataset": wildcards.dataset,
            "classifier": config["interpretable"][wildcards.analysis]["model"],
            "baseline": config["interpretable"][wildcards.analysis]["baseline"],
            "analysis": wildcards.analysis,
        },
        hit_attributions=lambda wildcards: [
            name
            for name in interpretable_attributions(
                wildcards.analysis, wildcards.dataset
            )
            if config["attributions"][name]["method"] == "hit"
        ],
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.hit_summary"),
    script:
        "../scripts/hit_summary.py"
