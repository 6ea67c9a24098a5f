"""Reading a Lambda's configuration from its environment: values checked, errors naming the variable."""

from __future__ import annotations

import math
from collections.abc import Mapping


class ConfigError(ValueError):
    """A Lambda environment variable with an unusable value: the message names the variable."""


def env_float(
    env: Mapping[str, str], name: str, default: float, *, low: float | None = None, high: float | None = None
) -> float:
    """A finite float from the environment, within [low, high]; ConfigError naming `name` otherwise."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f" in [{low}, {high}]" if low is not None and high is not None else ""
        raise ConfigError(f"environment variable {name}={raw!r} is not a finite number{bounds}")
    return value
