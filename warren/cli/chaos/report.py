"""A chaos run's report: ``report.json``, ``timeline.html`` (an SVG drawn here) and
``timeline.png`` (matplotlib, the ``chaos`` extra): confirms and deliveries per second,
publish-to-confirm p99 per second, and the fault spans."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, MARGIN = 960, 220, 40


def per_second(times: list[float]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for t in times:
        counts[int(t)] += 1
    return counts


def write_report(directory: Path, result: dict[str, Any]) -> str | None:
    """Write the three files; returns why the PNG is missing, if it is."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))
    (directory / "timeline.html").write_text(timeline_html(result))
    return timeline_png(result, directory / "timeline.png")


def p99_per_second(latencies: list[tuple[float, float]]) -> dict[int, float]:
    by_second: dict[int, list[float]] = defaultdict(list)
    for when, latency in latencies:
        by_second[int(when)].append(latency)
    return {second: sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]
            for second, values in by_second.items()}


def series_per_second(series: dict[str, Any]) -> tuple[dict[int, int], dict[int, int], dict[int, float]]:
    """Per second: confirms, deliveries, and the publish-to-confirm p99 (both timelines')."""
    return per_second(series["confirms"]), per_second(series["deliveries"]), p99_per_second(series["latencies"])


def timeline_png(result: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return "timeline.png needs matplotlib: pip install 'warrenmq[chaos]'"
    matplotlib.use("Agg")  # no display
    from matplotlib import pyplot

    confirms, deliveries, p99 = series_per_second(result["series"])
    figure, (rates, latency) = pyplot.subplots(2, 1, figsize=(12, 6), sharex=True)
    for axis in (rates, latency):
        for fault in result["faults"]:
            axis.axvspan(fault["start"], fault["healed"], color="#f4b6b6", alpha=0.5)
    for fault in result["faults"]:
        rates.annotate(f"{fault['nemesis']} {fault['node']}"[:40], (fault["start"], 1.0),
                       xycoords=("data", "axes fraction"), fontsize=7, rotation=20, va="bottom")
    seconds = range(int(max([*confirms, *deliveries, 0])) + 1)  # a second without any is a 0, not a gap
    rates.plot(seconds, [confirms.get(s, 0) for s in seconds], color="#1f5fbf", label="confirms/s")
    rates.plot(seconds, [deliveries.get(s, 0) for s in seconds], color="#2a9d3a", label="deliveries/s")
    rates.set_ylabel("per second")
    rates.legend(loc="lower right", fontsize=8)
    latency.plot(sorted(p99), [p99[s] * 1000 for s in sorted(p99)], color="#b5522b")
    latency.set_ylabel("publish-to-confirm p99, ms")
    latency.set_xlabel("seconds since the run started")
    verdict = result["verdict"]
    figure.suptitle(f"warren chaos, {result.get('broker', 'warren')}: {'OK' if verdict['ok'] else 'FAILED'}, "
                    f"{verdict['confirmed']:,} confirmed, {verdict['lost']} lost, {verdict['duplicated']} duplicated",
                    y=0.995)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return None


def timeline_html(result: dict[str, Any]) -> str:
    confirms, deliveries, p99 = series_per_second(result["series"])
    end = max([*confirms, *deliveries, *(int(f["healed"]) + 1 for f in result["faults"]), 1])
    top = max([*confirms.values(), *deliveries.values(), 1])
    worst = max([*p99.values(), 0.001])

    def x(t: float) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * t / end

    def line(points: dict[int, float], scale: float, colour: str) -> str:
        coords = " ".join(f"{x(s):.1f},{HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * points.get(s, 0) / scale:.1f}"
                          for s in range(end + 1))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'

    spans = "".join(
        f'<rect x="{x(f["start"]):.1f}" y="{MARGIN}" width="{max(1.0, x(f["healed"]) - x(f["start"])):.1f}" '
        f'height="{HEIGHT - 2 * MARGIN}" fill="#f4b6b6" opacity="0.5"><title>{html.escape(f["nemesis"])} '
        f'{html.escape(f["node"])}</title></rect>'
        f'<text x="{x(f["start"]):.1f}" y="{MARGIN - 5}" font-size="11">{html.escape(f["nemesis"])} '
        f'{html.escape(f["node"])}</text>'
        for f in result["faults"])
    verdict = result["verdict"]
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in verdict.items() if k != "samples")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>warren chaos</title></head>
<body style="font-family: sans-serif">
<h1>warren chaos: {"OK" if verdict["ok"] else "FAILED"}</h1>
<p>{html.escape(result.get("broker", "warren"))}: {result["nodes"]} nodes, {len(result["queues"])} {html.escape(result["queue_type"])} queues,
{result["duration"]:.0f} s, {len(result["faults"])} faults.</p>
<h2>Throughput (per second: confirms blue, deliveries green; top {top}) and faults</h2>
<svg width="{WIDTH}" height="{HEIGHT}">{spans}{line(dict(confirms), top, "#1f5fbf")}
{line(dict(deliveries), top, "#2a9d3a")}</svg>
<h2>Publish-to-confirm p99 per second (top {worst * 1000:.0f} ms)</h2>
<svg width="{WIDTH}" height="{HEIGHT}">{spans}{line(p99, worst, "#b5522b")}</svg>
<h2>Verdict</h2><table>{rows}</table>
</body></html>
"""
