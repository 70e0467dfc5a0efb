"""Diffusion utilities shared by the DDPM and every method built on it."""
