"""How long something took or will take, as people read it: one format for logs, tables and plans."""
from __future__ import annotations


def format_duration(seconds: float) -> str:
    """45s, 12m05s, 41h10m, and past three days '12.3 days (295h)' (a run's length or a plan's)."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    if hours >= 72:
        return f"{seconds / 86400:.1f} days ({hours}h)"
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
