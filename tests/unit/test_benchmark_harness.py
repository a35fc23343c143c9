"""The benchmark harness's own logic: parsing, ratios, the chart, the docs splice.

No server runs here and no figure is asserted; the harness itself runs in
--quick mode from .ci/run.
"""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import run  # noqa: E402


def row(server, rps, conc=16, mode="fcgi", variant="close", workers=1, route="/hello", **extra):
    return {"mode": mode, "variant": variant, "workers": workers, "threads": 4, "server": server,
            "route": route, "conc": conc, "status": "ok", "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0,
            "wrk_errors": {}, "log_errors": 0, **extra}


def test_nginx_error_lines_are_counted_and_grouped_without_client_details():
    log = ("2024/01/01 10:00:00 [error] 7#7: *12 connect() to unix:/s failed (11: Resource temporarily "
           "unavailable) while connecting to upstream, client: 127.0.0.1, server: , request: \"GET /\"\n"
           "2024/01/01 10:00:00 [warn] 7#7: *13 an upstream response is buffered to a temporary file\n"
           "2024/01/01 10:00:01 [error] 7#7: *14 connect() to unix:/s failed (11: Resource temporarily "
           "unavailable) while connecting to upstream, client: 127.0.0.1, server: , request: \"GET /\"\n")
    count, samples = run.log_errors(log)
    assert count == 2
    assert samples == ["2x connect() to unix:/s failed (11: Resource temporarily unavailable) "
                       "while connecting to upstream"]


def test_ratio_is_against_the_first_peer_of_the_group_that_is_not_a_ceiling():
    results = [row("nginx-return-200", 100_000), row("flup-threaded", 2_000), row("bridge", 5_000),
               row("bridge", 9_000, conc=64)]
    run.add_ratios(results)
    assert results[2]["ratio"] == 2.5 and results[2]["baseline"] == "flup-threaded"
    assert results[0]["ratio"] == 50
    assert results[3]["ratio"] == 1.0  # alone in its group: its own baseline


def test_cgi_scripts_share_one_group_whatever_their_route():
    results = [row("wsgiref CGIHandler", 100, mode="cgi", variant="apache", route="/cgi-bin/w.py/hello"),
               row("bridge", 150, mode="cgi", variant="apache", route="/cgi-bin/b.py/hello")]
    run.add_ratios(results)
    assert results[1]["ratio"] == 1.5


def test_a_target_missed_says_so_with_both_figures():
    results = [row("flup-threaded", 2_000), row("bridge", 3_000)]
    verdicts = {t["target"]: t for t in run.targets(results, {})}
    t = verdicts["FastCGI 1 proc >= 2x flup threaded (c16)"]
    assert t["verdict"] == "missed" and "3,000" in t["figure"] and "2,000" in t["figure"]


def test_chart_is_well_formed_svg_with_a_line_per_server():
    results = [row(s, r, conc=c) for s, base in (("flup-threaded", 2000), ("bridge", 5000))
               for c, r in ((1, base), (16, base * 2), (64, base * 3))]
    svg = report.svg_chart(results)
    root = ET.fromstring(svg)
    lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2


def test_py_spy_collapsed_stacks_become_shares_by_line_and_function():
    text = ("process 1:\"python\";thread (0x1);run (bridge/server/worker.py:10);send (bridge/fastcgi/server.py:20) 3\n"
            "process 1:\"python\";thread (0x1);run (bridge/server/worker.py:10) 1\n")
    prof = run.summarize_profile(text, "py-spy")
    assert prof["samples"] == 4
    assert prof["self"][0] == {"function": "bridge/fastcgi/server.py:20 (send)", "pct": 75.0}
    assert {"function": "bridge/server/worker.py:run", "pct": 100.0} in prof["inclusive"]


def test_docs_keep_the_prose_around_the_generated_part(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Intro by hand\n{run.BEGIN}\nold figures\n{run.END}\n## What the profile showed\nprose\n")
    run.write_doc(doc, f"{run.BEGIN}\nnew figures\n{run.END}")
    text = doc.read_text()
    assert "new figures" in text and "old figures" not in text
    assert text.startswith("# Intro by hand") and text.endswith("prose\n")


def test_ab_trees_take_their_own_worker_count_or_the_default(tmp_path):
    import ab
    trees = ab.parse_trees(f"before={tmp_path}/a@2,after={tmp_path}/b", workers=1)
    assert trees == [("before", str(tmp_path / "a"), 2), ("after", str(tmp_path / "b"), 1)]
    for bad in ("nosrc", "=src", "name="):
        with pytest.raises(ValueError, match="NAME=SRC"):
            ab.parse_trees(bad, workers=1)


def test_upload_rows_show_who_spent_the_cpu():
    r = row("bridge", 95, mode="bodies", size=1 << 20, mb_per_s=99.0,
            cpu_ms_per_request={"server": 3.4, "nginx": 6.4, "client": 2.2})
    assert report.cpu_text(r) == "CPU ms/req server 3.4 / nginx 6.4 / client 2.2"
    assert report.cpu_text(row("bridge", 95)) == ""


def test_cgi_warm_cells_cover_every_app_and_way_and_no_script_shadows_a_package():
    """A script named ``flask.py`` beside the app made ``import flask`` import the script itself."""
    import cgi_warm
    cells = cgi_warm.cases()
    assert [(app, way) for app, way, _ in cells] == (
        [(app, way) for app in cgi_warm.APPS for way, _ in cgi_warm.WAYS]
        + [("-", way) for way, _ in cgi_warm.FLOORS])
    assert all(path.endswith("/admin/login/") for app, _, path in cells if app == "Django")
    packages = {"flask", "django", "djsite", "flask_app", "bridge"}
    for _, _, path in cells:
        script = path.split("/")[2]
        assert script.split(".")[0] not in packages, script


def test_cgi_warm_summary_states_each_target_with_both_figures():
    import cgi_warm
    def cell(rps, p50):
        return {"rps": rps, "p50_ms": p50, "p99_ms": p50 * 2, "non_2xx": 0, "rounds": 2}
    table = {("Django", "plain CGI", 1): cell(3.0, 300.0), ("Django", "warm relay", 1): cell(45.0, 20.0),
             ("Flask", "cgi-fcgi relay", 1): cell(120.0, 6.0), ("Flask", "mod_fcgid", 1): cell(800.0, 1.0),
             ("-", "static C hello CGI", 1): cell(250.0, 1.5)}
    start = {"/usr/bin/python3 -c pass": {"median_ms": 10.0, "min_ms": 8.0, "cpu_ms": 9.0},
             "warm relay, 5-byte app": {"median_ms": 12.0, "min_ms": 9.0, "cpu_ms": 9.9}}
    text = "\n".join(cgi_warm.summary(table, start))
    assert "warm relay 45.0 req/s vs plain CGI 3.0 req/s = 15.0x (target >= 10x)" in text
    assert "= 1.20x / 1.12x / 1.10x (target <= 1.5x)" in text
    assert "p50 6.00 ms vs mod_fcgid 1.00 ms = 6.0x" in text
    assert "static C hello CGI, 1 conn) p50 1.50 ms = 1.50x" in text
