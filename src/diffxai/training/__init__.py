"""Training loops: supervised heads, self-supervised encoder, diffusion models."""
