#!/usr/bin/python3
"""Draws the proxy benchmarks' CPU per request as an SVG bar chart (standard library only).

Reads the Markdown reports that http1_proxy_bench.py and http2_proxy_bench.py print (or
the sections of docs/benchmarks.md that hold them): every table with a "proxy CPU-µs per
request" column, titled by the bold line above it. Each peer is a bar at its median, with
a whisker from the minimum to the maximum of the runs.

    /usr/bin/python3 tests/bench/chart.py --out docs/img/proxy-cpu-per-request.svg \
        http1-report.md http2-report.md

The chart shows the figures of the reports it is given, nothing else.
"""
import argparse
import html
import re
import sys

CPU_COLUMN = "proxy CPU-µs per request"
VALUE = re.compile(r"^\s*([\d.]+)\s*\(([\d.]+)[–-]([\d.]+)\)\s*$")  # "16.9 (14.3–18.1)"
COLOURS = {"culvert": "#1f6feb", "haproxy": "#8250df", "nginx": "#2da44e", "nghttpx": "#bf8700"}


def parse_tables(text: str) -> list[tuple[str, list[tuple[str, float, float, float]]]]:
    """[(title, [(peer, median, low, high)])] for every table with the CPU column."""
    charts = []
    title = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        bold = re.fullmatch(r"\*\*(.+)\*\*", line)
        if bold:
            title = bold.group(1)
        if line.startswith("|") and CPU_COLUMN in line:
            header = [c.strip() for c in line.strip("|").split("|")]
            col = header.index(CPU_COLUMN)
            rows = []
            i += 2  # the header's separator row
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                m = VALUE.match(cells[col]) if len(cells) > col else None
                if m:
                    rows.append((cells[0], float(m.group(1)), float(m.group(2)), float(m.group(3))))
                i += 1
            if rows:
                charts.append((title, rows))
            continue
        i += 1
    return charts


def svg(charts, heading: str) -> str:
    bar_h, gap, label_w, plot_w, pad = 18, 6, 90, 420, 12
    top = 40
    scale_max = max(high for _, rows in charts for *_, high in rows) * 1.1
    height = top + sum(28 + len(rows) * (bar_h + gap) + 14 for _, rows in charts) + 30
    width = pad + label_w + plot_w + 90
    x0 = pad + label_w

    def x(v):
        return x0 + v / scale_max * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{pad}" y="22" font-size="14" font-weight="bold">{html.escape(heading)}</text>']
    y = top
    for title, rows in charts:
        out.append(f'<text x="{pad}" y="{y + 14}" font-weight="bold">{html.escape(title)}</text>')
        y += 24
        for peer, median, low, high in rows:
            colour = COLOURS.get(peer, "#6e7781")
            out.append(f'<text x="{x0 - 6}" y="{y + bar_h - 5}" text-anchor="end">{html.escape(peer)}</text>')
            out.append(f'<rect x="{x0}" y="{y}" width="{x(median) - x0:.1f}" height="{bar_h}" fill="{colour}"/>')
            mid = y + bar_h / 2
            out.append(f'<line x1="{x(low):.1f}" y1="{mid}" x2="{x(high):.1f}" y2="{mid}" stroke="black"/>')
            for v in (low, high):
                out.append(f'<line x1="{x(v):.1f}" y1="{mid - 4}" x2="{x(v):.1f}" y2="{mid + 4}" stroke="black"/>')
            out.append(f'<text x="{x(high) + 6:.1f}" y="{y + bar_h - 5}">{median:g}</text>')
            y += bar_h + gap
        y += 14
    axis_y = y
    out.append(f'<line x1="{x0}" y1="{axis_y}" x2="{x0 + plot_w}" y2="{axis_y}" stroke="#6e7781"/>')
    step = 5 if scale_max <= 60 else 10
    v = 0
    while v <= scale_max:
        out.append(f'<line x1="{x(v):.1f}" y1="{axis_y}" x2="{x(v):.1f}" y2="{axis_y + 4}" stroke="#6e7781"/>')
        out.append(f'<text x="{x(v):.1f}" y="{axis_y + 16}" text-anchor="middle">{v}</text>')
        v += step
    out.append(f'<text x="{x0 + plot_w / 2}" y="{axis_y + 30}" text-anchor="middle">'
               'proxy CPU-µs per request (bar: median; whisker: min–max); lower is better</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heading", default="CPU per request: culvert beside HAProxy, nginx, nghttpx")
    ap.add_argument("reports", nargs="+", help="Markdown reports printed by the proxy benchmarks")
    args = ap.parse_args()
    charts = []
    for path in args.reports:
        with open(path) as f:
            charts += parse_tables(f.read())
    if not charts:
        print(f"no table with a '{CPU_COLUMN}' column in {args.reports}", file=sys.stderr)
        return 1
    with open(args.out, "w") as f:
        f.write(svg(charts, args.heading))
    print(f"{args.out}: {len(charts)} tables, {sum(len(r) for _, r in charts)} bars")
    return 0


if __name__ == "__main__":
    sys.exit(main())
