"""What every model-training job shares: where it reads and writes, checkpoints, provenance."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.persistence import PERSISTENCE_SETTINGS
from diffxai.models.io import load_model, save_model
from diffxai.paths import resolve
from diffxai.provenance import provenance

log = logging.getLogger(__name__)


@dataclass
class ModelJob:
    """One (dataset, model) training job. ``out_dir`` receives model.safetensors,
    config.json and (for jobs that evaluate themselves) metrics.json."""

    data_path: Path
    out_dir: Path
    model_name: str
    dataset_name: str
    model_cfg: dict[str, Any]
    seed: int
    device: torch.device
    base_dir: Path = Path(".")
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        # before any network is built: weight initialisation draws from torch's global generator
        torch.manual_seed(self.seed)

    @classmethod
    def from_snakemake(cls, sm: Any, device: torch.device) -> ModelJob:
        """The job of a ``train_*`` rule: input ``data``, output ``weights``, params cfg and seed.
        The settings that leave the weights unchanged (how often a checkpoint is saved) are read
        from the config, not the params, so that changing them re-runs no training."""
        cfg = dict(sm.params.cfg)
        train = sm.config["models"][sm.wildcards.name].get("train", {})
        persistence = {k: train[k] for k in PERSISTENCE_SETTINGS if k in train}
        if persistence:
            cfg["train"] = {**cfg["train"], **persistence}
        return cls(
            Path(sm.input.data),
            Path(sm.output.weights).parent,
            sm.wildcards.name,
            sm.wildcards.dataset,
            cfg,
            sm.params.seed,
            device,
        )

    @property
    def data(self) -> PreparedData:
        return PreparedData(self.data_path)

    @property
    def checkpoint(self) -> str | None:
        return self.model_cfg.get("checkpoint")

    def load_checkpoint(self, spec: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        """The user's checkpoint built as ``spec`` describes (no training)."""
        module, info = load_model(resolve(self.checkpoint, self.base_dir), spec=spec)
        log.info("loaded %s %s from %s (no training)", spec["kind"], self.model_name, self.checkpoint)
        return module, info

    def save(
        self,
        module: nn.Module,
        info: dict[str, Any],
        modules: list[str],
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Write weights and config.json with provenance, and metrics.json when given."""
        elapsed = time.perf_counter() - self.started
        source = self.checkpoint or "trained"
        info["provenance"] = provenance(
            self.model_cfg,
            modules,
            self.seed,
            str(self.device),
            elapsed,
            dataset=self.dataset_name,
            model=self.model_name,
            source=source,
        )
        save_model(self.out_dir, module, info)
        if metrics is not None:
            header = {
                "model": self.model_name,
                "dataset": self.dataset_name,
                "kind": info["kind"],
                "source": source,
                "wall_time_s": elapsed,
            }
            write_json(self.out_dir / "metrics.json", {**header, **metrics})
        log.info(
            "saved %s for %s in %s after %.1f s", self.model_name, self.dataset_name, self.out_dir, elapsed
        )
