rule train_supervised:
    input:
        data=f"{R}/{{dataset}}/data.zarr",
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    wildcard_constraints:
        name=SUPERVISED,
    params:
        cfg=model_cfg,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.train_supervised"),
    log:
        f"{R}/logs/train_supervised/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_supervised/{{dataset}}/{{name}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    conda:
        "../envs/diffxai.yaml"
    script:
        "../scripts/train_supervised.py"


rule train_encoder:
    input:
        data=f"{R}/{{dataset}}/data.zarr",
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
    wildcard_constraints:
        name=ENCODERS,
    params:
        cfg=model_cfg,
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.train_encoder"),
    log:
        f"{R}/logs/train_encoder/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_encoder/{{dataset}}/{{name}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    conda:
        "../envs/diffxai.yaml"
    script:
        "../scripts/train_encoder.py"


rule train_ddpm:
    input:
        data=f"{R}/{{dataset}}/data.zarr",
    output:
        weights=f"{R}/{{dataset}}/models/{{name}}/model.safetensors",
        config=f"{R}/{{dataset}}/models/{{name}}/config.json",
    wildcard_constraints:
        name=DDPMS,
    params:
        # only what changes the weights: evaluation settings do not re-train
        cfg=lambda wildcards: {
            k: v for k, v in model_cfg(wildcards).items() if k != "evaluation"
        },
        seed=job_seed,
        device=DEVICE,
        cache=lambda wildcards: f"{R}/{wildcards.dataset}/cache/{wildcards.name}",
        code=source_hash("diffxai.jobs.train_ddpm"),
    log:
        f"{R}/logs/train_ddpm/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/train_ddpm/{{dataset}}/{{name}}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=GPU,
    conda:
        "../envs/diffxai.yaml"
    script:
        "../scripts/train_ddpm.py"


def ddpm_evaluation_inputs(wildcards):
    evaluation = model_cfg(wildcards)["evaluation"]
    inputs = {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "ddpm": model_files(wildcards.dataset, wildcards.name),
    }
    if evaluation["encoder"]:
        inputs["encoder"] = model_files(wildcards.dataset, evaluation["encoder"])
    for regressor in evaluation["regressors"]:
        inputs[f"regressor_{regressor}"] = model_files(wildcards.dataset, regressor)
    return inputs


rule evaluate_ddpm:
    input:
        unpack(ddpm_evaluation_inputs),
    output:
        metrics=f"{R}/{{dataset}}/models/{{name}}/metrics.json",
        samples=f"{R}/{{dataset}}/models/{{name}}/samples.png",
    wildcard_constraints:
        name=DDPMS,
    params:
        evaluation=lambda wildcards: model_cfg(wildcards)["evaluation"],
        seed=job_seed,
        device=DEVICE,
        code=source_hash("diffxai.jobs.evaluate_ddpm"),
    log:
        f"{R}/logs/evaluate_ddpm/{{dataset}}/{{name}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_ddpm/{{dataset}}/{{name}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
    conda:
        "../envs/diffxai.yaml"
    script:
        "../scripts/evaluate_ddpm.py"
