"""Parse input-shape strings such as ``1x3x224x224``."""

from __future__ import annotations

from leanvision.errors import ConfigError


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; anything else is a ConfigError saying the expected form."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d <= 0 for d in dims):
        raise ConfigError(
            f"bad input shape '{text}': expected positive integers joined by 'x', e.g. 1x3x224x224 (batch x C x H x W)"
        )
    return dims
