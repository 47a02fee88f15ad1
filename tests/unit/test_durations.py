"""Durations read the same in logs, `tools/status.py`, `tools/compare.py` and `plan`."""
from research.durations import format_duration


def test_durations_read_naturally():
    assert [format_duration(s) for s in (5, 125, 725, 3 * 3600 + 5 * 60, 41 * 3600 + 600)] == [
        "5s", "2m05s", "12m05s", "3h05m", "41h10m"]


def test_multi_day_runs_read_in_days():
    assert format_duration(6969.3 * 3600) == "290.4 days (6969h)"
    assert format_duration(71 * 3600) == "71h00m"       # under three days: still hours, as a run's ETA


def test_negative_and_fractional_seconds():
    assert format_duration(-3) == "0s" and format_duration(59.6) == "1m00s"
