"""Usage drawn on the server: the geometry of an SVG bar chart of verdicts, which a template draws.

No script and no inline style (the console's Content-Security-Policy allows neither): bars are SVG
rectangles whose colours come from console.css by class, each with a <title> that a pointer or a screen
reader shows. Buckets without verdicts are drawn as gaps, so that a quiet day reads as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WIDTH, HEIGHT, TOP = 720, 160, 14  # the viewBox; the chart scales to its container
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    valid_y: float
    valid_height: float
    refused_y: float
    refused_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    valid: int
    refused: int
    peak: int  # the tallest bar's verdicts, which the top of the chart stands for
    first: str  # the labels under either end
    last: str
    width: int = WIDTH
    height: int = HEIGHT
    top: int = TOP


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _label(moment: datetime, granularity: str) -> str:
    return moment.strftime("%d %b %H:00" if granularity == "hour" else "%d %b")


def verdicts(usage: dict) -> Chart:
    """The chart of a usage answer (`KeyUsage` or `UsageReport`'s `total`, with its from, to and
    granularity): one bar per bucket from `from` to `to`, valid verdicts below and refusals above."""
    granularity, step = usage["granularity"], STEP[usage["granularity"]]
    counted = {_moment(b["start"]): b for b in usage.get("buckets", usage.get("total", []))}
    start, end = _moment(usage["from"]), _moment(usage["to"])
    moments = []
    while start < end:
        moments.append(start)
        start += step
    slot = WIDTH / max(1, len(moments))
    peak = max([b["total"] for b in counted.values()] + [0])
    scale = (HEIGHT - TOP) / peak if peak else 0.0
    bars, valid_total, refused_total = [], 0, 0
    for i, moment in enumerate(moments):
        bucket = counted.get(moment)
        if bucket is None:
            continue
        valid = bucket["outcomes"]["VALID"]
        refused = bucket["total"] - valid
        valid_total, refused_total = valid_total + valid, refused_total + refused
        valid_height, refused_height = valid * scale, refused * scale
        bars.append(Bar(x=round(i * slot + slot * 0.1, 2), width=round(slot * 0.8, 2),
                        valid_y=round(HEIGHT - valid_height, 2), valid_height=round(valid_height, 2),
                        refused_y=round(HEIGHT - valid_height - refused_height, 2),
                        refused_height=round(refused_height, 2),
                        title=f"{_label(moment, granularity)}: {valid:,} valid, {refused:,} refused"))
    last = moments[-1] if moments else end
    return Chart(bars, valid_total, refused_total, peak, _label(moments[0] if moments else end, granularity),
                 _label(last, granularity))
