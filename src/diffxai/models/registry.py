"""Networks by name: ``simple_cnn``, ``hit`` or any timm architecture (never pretrained).

Like ``timm.create_model``, :func:`create_network` builds any registered
architecture from its name, so adding one is one class and one registry entry.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from diffxai.models.simple_cnn import SimpleCNN

OWN_ARCHITECTURES = ("simple_cnn", "hit")


def own_architecture(arch: str) -> type[nn.Module]:
    """The class of one of our networks (``OWN_ARCHITECTURES``). HiT is imported here, not at module
    level: it brings timm and torchvision, seconds of imports a job building a simple_cnn skips."""
    if arch == "hit":
        from diffxai.models.hit import HiT

        return HiT
    return SimpleCNN


def create_network(
    arch: str, in_channels: int, image_size: int, num_outputs: int, arch_params: dict[str, Any] | None = None
) -> nn.Module:
    """A freshly initialised network mapping (N, in_channels, S, S) images to (N, num_outputs)."""
    arch_params = dict(arch_params or {})
    if arch in OWN_ARCHITECTURES:
        cls = own_architecture(arch)
        if "img_size" in inspect.signature(cls).parameters:
            arch_params.setdefault("img_size", image_size)
        return cls(in_channels=in_channels, num_outputs=num_outputs, **arch_params)
    import timm

    if not timm.is_model(arch):
        allowed = ", ".join(OWN_ARCHITECTURES)
        raise ValueError(f"unknown architecture {arch!r}: allowed {allowed} or a timm model name")
    entrypoint = timm.models.model_entrypoint(arch)
    if _accepts_img_size(entrypoint):
        arch_params.setdefault("img_size", image_size)
    return timm.create_model(
        arch, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **arch_params
    )


def _accepts_img_size(entrypoint: Any) -> bool:
    """Whether the timm model class behind ``arch`` takes ``img_size`` (ViTs do, CNNs do not)."""
    module = inspect.getmodule(entrypoint)
    return any(
        inspect.isclass(obj)
        and issubclass(obj, nn.Module)
        and obj.__module__ == module.__name__
        and "img_size" in inspect.signature(obj.__init__).parameters
        for obj in vars(module).values()
    )
