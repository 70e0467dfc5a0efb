"""One module per workflow job: the logic behind each thin script in ``scripts/``."""
