"""Counterfactual methods by config name."""

from __future__ import annotations

from collections.abc import Callable

from diffxai.methods import ace, dime, freemcg, gcd, time
from diffxai.methods.base import Explanations

METHODS: dict[str, Callable[..., Explanations]] = {
    "dime": dime.explain,
    "ace": ace.explain,
    "freemcg": freemcg.explain,
    "gcd": gcd.explain,
    "time": time.explain,
}
