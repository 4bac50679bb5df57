"""Plots drawn as inline SVG text: horizontal bars for categories, vertical bars for histograms. No scripts,
no fonts or files from outside the page."""

from __future__ import annotations

from html import escape

WIDTH = 640
BAR_ROW = 22
LABEL_W = 200
MAX_BARS = 25
LABEL_CHARS = 30


def _figure(title: str, svg: str, note: str = "") -> str:
    caption = escape(title) + (f' <span class="note">{escape(note)}</span>' if note else "")
    return f'<figure class="plot"><figcaption>{caption}</figcaption>{svg}</figure>'


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def bar_chart(title: str, counts: dict[str, int], note: str = "") -> str:
    """One horizontal bar per category (the largest MAX_BARS), labelled with its name and count."""
    items = list(counts.items())[:MAX_BARS]
    if len(counts) > MAX_BARS:
        note = (note + " " if note else "") + f"(largest {MAX_BARS} of {len(counts)})"
    top = max((n for _, n in items), default=0) or 1
    height = BAR_ROW * max(len(items), 1) + 8
    area = WIDTH - LABEL_W - 70
    rows = []
    for i, (label, n) in enumerate(items):
        y, w = 4 + i * BAR_ROW, max(1.0, area * n / top) if n else 0
        rows.append(f'<g><title>{escape(label)}: {n:,}</title>'
                    f'<text x="{LABEL_W - 6}" y="{y + 15}" text-anchor="end">{escape(_short(label))}</text>'
                    f'<rect class="bar" x="{LABEL_W}" y="{y + 2}" width="{w:.1f}" height="{BAR_ROW - 6}"/>'
                    f'<text x="{LABEL_W + w + 4:.1f}" y="{y + 15}">{n:,}</text></g>')
    if not items:
        rows.append(f'<text x="{LABEL_W}" y="18">none</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
           f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">{"".join(rows)}</svg>')
    return _figure(title, svg, note)


def histogram(title: str, bins: list[list[int]], width: int, unit: str, note: str = "") -> str:
    """Vertical bars, one per bin (`[start, count]`, each `width` wide), with the x range and the tallest count."""
    height, left, bottom, top_pad = 200, 56, 30, 10
    plot_w, plot_h = WIDTH - left - 10, height - bottom - top_pad
    tallest = max((c for _, c in bins), default=0) or 1
    step = plot_w / max(len(bins), 1)
    parts = [f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{WIDTH - 10}" y2="{top_pad + plot_h}"/>',
             f'<text x="{left - 6}" y="{top_pad + 10}" text-anchor="end">{tallest:,}</text>',
             f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end">0</text>']
    for i, (start, count) in enumerate(bins):
        h = plot_h * count / tallest
        end = start + width - 1
        span = f"{start:,}" if width == 1 else f"{start:,}–{end:,}"
        parts.append(f'<rect class="bar" x="{left + i * step + 1:.1f}" y="{top_pad + plot_h - h:.1f}" '
                     f'width="{max(step - 2, 1):.1f}" height="{h:.1f}"><title>{span} {escape(unit)}: '
                     f'{count:,}</title></rect>')
    if bins:
        last = bins[-1][0] + width
        middle = bins[0][0] + (last - bins[0][0]) // 2
        parts += [f'<text x="{left}" y="{height - 10}">{bins[0][0]:,}</text>',
                  f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle">{middle:,}</text>',
                  f'<text x="{WIDTH - 10}" y="{height - 10}" text-anchor="end">{last:,} {escape(unit)}</text>']
    else:
        parts.append(f'<text x="{left + 8}" y="{top_pad + 20}">no values</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
           f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">{"".join(parts)}</svg>')
    return _figure(title, svg, note)
