"""Model definitions, the model registry and model I/O."""
