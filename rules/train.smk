rule train_supervised:
    input:
        unpack(training_inputs),
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    log:
        f"{R}/logs/train_supervised/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_supervised/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=SUPERVISED,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        cfg=model_cfg,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.train_supervised"),
    script:
        "../scripts/train_supervised.py"


rule train_encoder:
    input:
        unpack(training_inputs),
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    log:
        f"{R}/logs/train_encoder/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_encoder/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=ENCODERS,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        cfg=model_cfg,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.train_encoder"),
    script:
        "../scripts/train_encoder.py"


rule train_ddpm:
    input:
        unpack(training_inputs),
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
    log:
        f"{R}/logs/train_ddpm/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_ddpm/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=DDPMS,
    priority: 10  # the longest job: start it as soon as its data exists
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPU,
    params:
        # only what changes the weights: evaluation settings do not re-train
        cfg=lambda wildcards: diffusion_cfg(wildcards, "evaluation"),
        seed=job_seed,
        device=DEVICE,
        cache=lambda wildcards: f"{R}/{wildcards.dataset}/cache/{wildcards.name}",
        code=source_hash("diffxai.jobs.train_ddpm"),
    script:
        "../scripts/train_ddpm.py"


rule evaluate_ddpm:
    input:
        unpack(ddpm_evaluation_inputs),
    output:
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
        samples=f"{R}/{{dataset}}/models/{{name}}/samples.png",
    log:
        f"{R}/logs/evaluate_ddpm/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_ddpm/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=DDPMS,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        evaluation=lambda wildcards: model_cfg(wildcards)["evaluation"],
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.evaluate_ddpm"),
    script:
        "../scripts/evaluate_ddpm.py"


rule train_diffae:
    input:
        unpack(training_inputs),
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
    log:
        f"{R}/logs/train_diffae/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_diffae/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=DIFFAES,
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPU,
    params:
        # only what changes the weights: latents settings do not re-train
        cfg=lambda wildcards: diffusion_cfg(wildcards, "latents"),
        seed=job_seed,
        device=DEVICE,
        cache=lambda wildcards: f"{R}/{wildcards.dataset}/cache/{wildcards.name}",
        code=source_hash("diffxai.jobs.train_diffae"),
    script:
        "../scripts/train_diffae.py"


rule train_t2i:
    input:
        unpack(training_inputs),
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    log:
        f"{R}/logs/train_t2i/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_t2i/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=T2IS,
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPU,
    params:
        # the persistence settings out: they do not change the weights
        cfg=lambda wildcards: diffusion_cfg(wildcards),
        seed=job_seed,
        device=DEVICE,
        cache=lambda wildcards: f"{R}/{wildcards.dataset}/cache/{wildcards.name}",
        code=source_hash("diffxai.jobs.train_t2i"),
    script:
        "../scripts/train_t2i.py"


rule encode_diffae:
    input:
        **lpips_inputs(),
        data=f"{R}/{{dataset}}/data.zarr",
        diffae=model_files("{dataset}", "{name}"),
    output:
        latents=directory(f"{R}/{{dataset}}/models/{{name}}/latents.zarr"),
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    log:
        f"{R}/logs/encode_diffae/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/encode_diffae/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=DIFFAES,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    params:
        latents=lambda wildcards: model_cfg(wildcards)["latents"],
        lpips_weights=config["counterfactual_metrics"]["lpips_weights"],
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.encode_diffae"),
    script:
        "../scripts/encode_diffae.py"
