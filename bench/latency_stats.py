"""Helpers shared by the Python benches: event timestamps and percentiles."""
import datetime


def ts(text):
    """An ISO-8601 UTC timestamp of an event ("...Z") as Unix seconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    """The p-th percentile (nearest rank) of values; NaN when there are none."""
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
