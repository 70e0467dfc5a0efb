"""The workflow config: schema, default filling, semantic checks and ablation designs."""
