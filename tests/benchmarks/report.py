"""The results as a terminal table, a Markdown page and an SVG chart (plain text templating)."""
from __future__ import annotations

import html
import math

GROUP_TITLES = {
    ("fcgi", "close"): "FastCGI through nginx, a new connection per request",
    ("fcgi", "keepconn"): "FastCGI through nginx, fastcgi_keep_conn on + upstream keepalive 32",
    ("http", "direct"): "HTTP, wrk straight to the server (keep-alive)",
    ("http", "proxy"): "HTTP behind nginx proxy_pass (upstream keepalive 32)",
    ("apps", "direct"): "Realistic apps (Flask, Django), HTTP straight to the server (keep-alive)",
    ("apps", "nginx"): "Realistic apps behind nginx (FastCGI for -fcgi servers, proxy_pass for the others)",
    ("cgi", "apache"): "CGI under Apache mod_cgid",
    ("bodies", "close"): "Uploads through nginx FastCGI (POST /echo, byte-exact)",
}


def errors_text(row: dict) -> str:
    parts = [f"{k} {v}" for k, v in sorted(row.get("wrk_errors", {}).items())]
    if row.get("log_errors"):
        parts.append(f"log {row['log_errors']}")
    return ", ".join(parts) or "0"


def cpu_us(row: dict) -> dict:
    """CPU per request in microseconds (runs saved before December 2026 said milliseconds)."""
    if "cpu_us_per_request" in row:
        return row["cpu_us_per_request"]
    return {k: 1000 * v for k, v in row.get("cpu_ms_per_request", {}).items()}


def cpu_text(row: dict) -> str:
    """CPU per request of server, nginx and load client ("" if not measured)."""
    cpu = cpu_us(row)
    if not cpu:
        return ""
    return "CPU µs/req " + " / ".join(f"{k} {cpu[k]:,.0f}" for k in ("server", "nginx", "client") if k in cpu)


def cpu_cell(row: dict) -> str:
    cpu = cpu_us(row)
    return " / ".join(f"{cpu[k]:,.0f}" if k in cpu else "-" for k in ("server", "nginx", "client")) if cpu else "-"


# Issue 18's rule for a saturated case: no connection waits much longer than the others.
FAIR_P99, FAIR_MAX = 3, 10


def is_fair(row: dict) -> bool | None:
    """p99 <= 3x p50 and max <= 10x p50 at 64 connections and more (None below: not judged)."""
    if row["conc"] < 64 or not row.get("p50_ms"):
        return None
    return row["p99_ms"] <= FAIR_P99 * row["p50_ms"] and row["max_ms"] <= FAIR_MAX * row["p50_ms"]


def per_conn_cell(row: dict) -> str:
    """Requests completed per connection, min / median / max, and (N) connections that completed none."""
    pc = row.get("per_conn")
    if not pc:
        return "-"
    return f"{pc['min']:,.0f} / {pc['median']:,.0f} / {pc['max']:,.0f} ({pc['zero']:g})"


def fair_text(row: dict) -> str:
    fair = is_fair(row)
    if fair is None:
        return ""
    return f"per conn {per_conn_cell(row)} fair {'✓' if fair else '✗'}"


def fmt_num(value, digits=0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def case_label(row: dict) -> str:
    if row["mode"] == "bodies":
        return f"{row['size'] // 1048576} MiB"
    if row.get("app_label"):
        return f"{row['app_label']} {row['route']}"
    return row["route"]


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        head = [r["mode"], r["variant"], f"{r['workers']}x{r['threads']}", r["server"], case_label(r), str(r["conc"])]
        if r["status"] != "ok":
            rows.append(head + [r["status"]] + [""] * (len(HEADER) - len(head) - 2) + [r.get("reason", "")[:60]])
            continue
        extra = f"{r['mb_per_s']:.0f} MB/s" if r["mode"] == "bodies" else ""
        if r.get("loadavg"):
            # The machine's 1-minute load when the case started: 2 cores, so
            # anything well above 2 means other programs shared them.
            extra = (extra + " " if extra else "") + f"load {r['loadavg'].split()[0]}"
        fair = is_fair(r)
        spread = r.get("rps_spread_pct")
        rows.append(head + [fmt_num(r["rps"]), f"{spread:.0f}" if spread is not None else "-",
                            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['max_ms']:.1f}" if "max_ms" in r else "-",
                            per_conn_cell(r) if fair is not None else "", "" if fair is None else "✓" if fair else "✗",
                            cpu_cell(r), errors_text(r),
                            f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-", extra])
    return rows


HEADER = ["mode", "via", "procs x threads", "server", "case", "conns", "req/s", "± %", "p50 ms", "p99 ms",
          "max ms", "req per conn min / med / max (none)", "fair", "CPU µs/req server / nginx / client",
          "errors", "vs first", "note"]
RIGHT = set(range(5, 16))  # the figures, right-aligned in the terminal


def terminal_table(results: list[dict]) -> str:
    rows = [HEADER] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(widths[i]) if i in RIGHT else cell.ljust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(out)


# --- the chart ---------------------------------------------------------------

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
BRIDGE_COLOR = "#d62728"


def chart_panels(results: list[dict]) -> list[dict]:
    """One panel per (mode, via, processes) with the /hello req/s of each server by concurrency."""
    panels: dict = {}
    for r in results:
        if r["status"] != "ok" or r["mode"] not in ("fcgi", "http") or r["route"] != "/hello":
            continue
        if r["server"] == "nginx-return-200":  # tens of thousands: it would flatten every other line
            continue
        key = (r["mode"], r["variant"], r["workers"])
        panel = panels.setdefault(key, {"key": key, "series": {}})
        panel["series"].setdefault(r["server"], {})[r["conc"]] = r["rps"]
    return [panels[k] for k in sorted(panels, key=lambda k: (k[0] != "fcgi", k[1], k[2]))]


def svg_chart(results: list[dict]) -> str:
    panels = [p for p in chart_panels(results) if any(len(s) > 0 for s in p["series"].values())]
    width, height, cols = 470, 290, 2
    rows = max(1, math.ceil(len(panels) / cols))
    total_w, total_h = width * cols + 20, height * rows + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
           f'viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{total_w}" height="{total_h}" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">Requests/s by server and concurrency '
           '(14-byte hello; higher is better)</text>']
    if not panels:
        out.append('<text x="10" y="45">no results</text>')
    for index, panel in enumerate(panels):
        ox = 10 + (index % cols) * width
        oy = 35 + (index // cols) * height
        out.extend(_panel(panel, ox, oy, width - 20, height - 15))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(panel: dict, ox: float, oy: float, w: float, h: float) -> list[str]:
    mode, variant, workers = panel["key"]
    title = f"{GROUP_TITLES.get((mode, variant), mode)} - {workers} proc"
    left, top, right, bottom = 55, 30, 120, 30
    pw, ph = w - left - right, h - top - bottom
    concs = sorted({c for s in panel["series"].values() for c in s})
    peak = max((v for s in panel["series"].values() for v in s.values()), default=1)
    ymax = _nice(peak)
    parts = [f'<g transform="translate({ox},{oy})">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="#fafafa" stroke="#ddd"/>',
             f'<text x="8" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i in range(5):
        v = ymax * i / 4
        y = top + ph - ph * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_short(v)}</text>')

    def x_of(c):
        i = concs.index(c)
        return left + (pw * (i + 0.5) / len(concs))
    for c in concs:
        parts.append(f'<text x="{x_of(c):.1f}" y="{top + ph + 14}" text-anchor="middle">{c}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 27}" text-anchor="middle" fill="#666">connections</text>')
    for n, (server, points) in enumerate(panel["series"].items()):
        color = BRIDGE_COLOR if server == "bridge" else PALETTE[n % len(PALETTE)]
        if color == BRIDGE_COLOR and server != "bridge":
            color = PALETTE[(n + 1) % len(PALETTE)]
        stroke = 3 if server == "bridge" else 1.5
        coords = [(x_of(c), top + ph - ph * min(v, ymax) / ymax) for c, v in sorted(points.items())]
        if len(coords) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{stroke}"/>')
        for (x, y), (c, v) in zip(coords, sorted(points.items())):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                         f'<title>{html.escape(server)} c{c}: {v:,.0f} req/s</title></circle>')
        ly = top + 12 + n * 15
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 24}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="{stroke}"/>')
        parts.append(f'<text x="{left + pw + 28}" y="{ly}">{html.escape(server)}</text>')
    parts.append("</g>")
    return parts


def _nice(value: float) -> float:
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 6, 8, 10):  # a quarter of each is a round tick
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _short(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"
