rule aggregate:
    input:
        [entry["path"] for entry in report_entries()],
    output:
        metrics=report(
            f"{R}/report/metrics.csv",
            caption="captions/metrics.rst",
            category="Metrics",
        ),
        tables=report(
            directory(f"{R}/report/tables"),
            patterns=["{name}.csv"],
            caption="captions/table.rst",
            category="Tables",
        ),
        markdown=f"{R}/report/tables.md",
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    localrule: True  # tables of small files: not worth a cluster job
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        entries=report_entries(),
        label_factors=label_factors(),
        code=source_hash("diffxai.jobs.aggregate"),
    script:
        "../scripts/aggregate.py"


rule report_figures:
    input:
        metrics=f"{R}/report/metrics.csv",
        data=[f"{R}/{dataset}/data.zarr" for dataset in config["datasets"]],
        stores=[entry["path"] for entry in figure_entries()],
        curves=list(variance_curves().values()),
    output:
        figures=report(
            directory(f"{R}/report/figures"),
            patterns=["{name}.png"],
            caption="captions/figure.rst",
            category="Figures",
        ),
        # the validated config; rewritten when the report's figures are (a setting that
        # changes no result reruns nothing, so it does not rewrite this either)
        config=report(
            f"{R}/report/config.yaml",
            caption="captions/config.rst",
            category="Configuration",
        ),
    log:
        f"{R}/logs/report_figures.log",
    benchmark:
        f"{R}/benchmarks/report_figures.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        entries=figure_entries(),
        data={dataset: f"{R}/{dataset}/data.zarr" for dataset in config["datasets"]},
        curves=variance_curves(),
        ablations={
            name: entry["explanation"] for name, entry in config["ablations"].items()
        },
        n_images=config["report"]["n_images"],
        code=source_hash("diffxai.jobs.report_figures"),
    script:
        "../scripts/report_figures.py"
