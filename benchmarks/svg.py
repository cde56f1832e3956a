"""Line charts as plain SVG text (no plotting library is a dependency of this project)."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 760, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 230, 40, 50

Series = tuple[str, list[tuple[float, float]]]


def _ticks(high: float, count: int = 5) -> list[float]:
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(high / step) + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 10000 else f"{value:.0f}"


def line_chart(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: list[Series],
    reference: list[Series] | None = None,
    hlines: list[tuple[float, str]] | None = None,
) -> Path:
    """
    Write a line chart: solid ``series``, dashed ``reference`` lines (e.g. the physical limit) and
    dotted horizontal ``hlines`` (e.g. a target), with a legend on the right.
    """
    reference = reference or []
    hlines = hlines or []
    points = [p for _, pts in series + reference for p in pts]
    xmax = max([x for x, _ in points] or [1.0])
    ymax = max([y for _, y in points] + [y for y, _ in hlines] or [1.0]) * 1.05
    xticks, yticks = _ticks(xmax), _ticks(ymax)
    xmax, ymax = xticks[-1], yticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + plot_w * x / xmax

    def sy(y: float) -> float:
        return TOP + plot_h * (1 - y / ymax)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for x in xticks:
        out.append(f'<line x1="{sx(x):.1f}" y1="{TOP}" x2="{sx(x):.1f}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_label(x)}</text>')
    for y in yticks:
        out.append(
            f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{LEFT + plot_w}" y2="{sy(y):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>')
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">{escape(ylabel)}</text>'
    )
    legend_y = TOP + 10
    entries = [(name, pts, "") for name, pts in series] + [
        (name, pts, 'stroke-dasharray="6 4"') for name, pts in reference
    ]
    for index, (name, pts, dash) in enumerate(entries):
        colour = COLOURS[index % len(COLOURS)] if not dash else "#555"
        if pts:
            path_d = " ".join(
                f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts)
            )
            out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2" {dash}/>')
        lx = LEFT + plot_w + 12
        out.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 22}" y2="{legend_y}" stroke="{colour}" '
            f'stroke-width="2" {dash}/>'
        )
        out.append(f'<text x="{lx + 28}" y="{legend_y + 4}">{escape(name)}</text>')
        legend_y += 18
    for y, name in hlines:
        out.append(
            f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{LEFT + plot_w}" y2="{sy(y):.1f}" stroke="#000" '
            'stroke-dasharray="2 3"/>'
        )
        out.append(
            f'<text x="{LEFT + plot_w - 4}" y="{sy(y) - 4:.1f}" text-anchor="end">{escape(name)}</text>'
        )
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    return path
