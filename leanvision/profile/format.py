"""Human-readable formatting of counts and profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leanvision.profile.macs import Profile

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_count(n: float, *, digits: int = 1) -> str:
    """141_200_000 -> '141.2M'; small numbers are printed as they are."""
    for scale, suffix in _SUFFIXES:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{suffix}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def format_profile(prof: Profile, *, depth: int = 1) -> str:
    """A small text table of MACs (and BOPs when any) per module down to `depth` levels, plus totals."""
    total = prof.macs or 1
    binary = bool(prof.bops)
    lines = [f"{'module':<40} {'MACs':>10} {'share':>7}" + (f" {'BOPs':>10}" if binary else "")]
    for name, macs in prof.by_module.items():
        bops = prof.bops_by_module.get(name, 0)
        level = 0 if name == "" else name.count(".") + 1
        if level > depth or (level and not macs and not bops):
            continue
        label = "(model)" if name == "" else "  " * level + name
        row = f"{label:<40} {format_count(macs):>10} {100 * macs / total:>6.1f}%"
        lines.append(row + (f" {format_count(bops):>10}" if binary else ""))
    lines.append(f"params: {format_count(prof.params, digits=2)}")
    if binary:
        lines.append(f"bops: {format_count(prof.bops)} (ops = macs + bops / 64 = {format_count(prof.ops)})")
    if prof.unsupported:
        ops = ", ".join(f"{op} x{n}" for op, n in prof.unsupported.most_common())
        lines.append(f"not counted: {ops}")
    return "\n".join(lines)
