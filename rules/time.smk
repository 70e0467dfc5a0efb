rule distill:
    input:
        unpack(distill_inputs),
    output:
        tokens=f"{R}/{{dataset}}/tokens/{{tokens}}/tokens.safetensors",
        index=f"{R}/{{dataset}}/tokens/{{tokens}}/tokens.json",
    log:
        f"{R}/logs/distill/{{dataset}}/{{tokens}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{dataset}}/{{tokens}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU,
    params:
        settings=lambda wildcards: {
            k: v
            for k, v in config["distill"][wildcards.tokens].items()
            if k != "datasets"
        },
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.distill"),
    script:
        "../scripts/distill.py"
