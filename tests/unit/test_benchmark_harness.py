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

import load  # noqa: E402
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


def test_rows_show_who_spent_the_cpu_in_microseconds_even_from_runs_saved_in_milliseconds():
    r = row("bridge", 95, mode="bodies", size=1 << 20, mb_per_s=99.0,
            cpu_us_per_request={"server": 3400.2, "nginx": 6400, "client": 2200})
    assert report.cpu_text(r) == "CPU µs/req server 3,400 / nginx 6,400 / client 2,200"
    old = row("bridge", 95, cpu_ms_per_request={"server": 0.0412, "client": 0.0105})
    assert report.cpu_cell(old) == "41 / - / 10"
    assert report.cpu_text(row("bridge", 95)) == "" and report.cpu_cell(row("bridge", 95)) == "-"


def test_rounds_combine_into_medians_with_errors_summed_and_the_spread_of_rps():
    def one(rps, p99, errors, server_us):
        return {"rps": rps, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99, "max_ms": p99 * 2, "mb_per_s": 1.0,
                "requests": int(rps), "wrk_errors": errors, "log_errors": 1, "log_samples": ["1x reset"],
                "cpu_us_per_request": {"server": server_us, "client": 5.0},
                "per_conn": {"min": rps / 100, "median": rps / 64, "max": rps / 50, "zero": 0}}
    rounds = [one(1000, 9.0, {"timeout": 2}, 40.0), one(1200, 3.0, {}, 30.0), one(800, 5.0, {"read": 1}, 50.0)]
    out = run.combine(rounds)
    assert out["rps"] == 1000 and out["p99_ms"] == 5.0 and out["max_ms"] == 10.0
    assert out["cpu_us_per_request"] == {"server": 40.0, "client": 5.0}
    assert out["per_conn"]["min"] == 10 and out["per_conn"]["max"] == 20
    assert out["wrk_errors"] == {"timeout": 2, "read": 1} and out["log_errors"] == 3
    assert out["requests"] == 3000 and out["rps_spread_pct"] == 40.0
    assert [r["rps"] for r in out["rounds"]] == [1000, 1200, 800]  # in the order they ran


def test_servers_take_turns_in_alternating_order_round_after_round():
    assert [run.turns("ABC", n) for n in range(4)] == [list("ABC"), list("CBA"), list("ABC"), list("CBA")]


def test_fairness_is_judged_only_when_saturated_by_issue_18s_rule():
    def fair(conc, p50, p99, mx):
        return report.is_fair(row("bridge", 1, conc=conc, p50_ms=p50, p99_ms=p99, max_ms=mx))
    assert fair(16, 1.0, 50.0, 500.0) is None
    assert fair(64, 1.0, 3.0, 10.0) is True
    assert fair(256, 1.0, 3.1, 5.0) is False
    assert fair(64, 1.0, 2.0, 10.5) is False
    r = row("bridge", 1, conc=64, p50_ms=1.0, p99_ms=2.0, max_ms=4.0,
            per_conn={"min": 0, "median": 310.0, "max": 1204, "zero": 3})
    cells = dict(zip(report.HEADER, report.table_rows([r])[0]))
    assert cells["req per conn min / med / max (none)"] == "0 / 310 / 1,204 (3)" and cells["fair"] == "✓"
    assert dict(zip(report.HEADER, report.table_rows([row("bridge", 1, max_ms=3.0)])[0]))["fair"] == ""


def plan_of(*argv):
    return run.plan(run.parse_args(list(argv)))


def test_only_apps_selects_the_realistic_app_group_with_every_server_and_framework():
    groups = plan_of("--only", "apps")
    assert groups and {g["mode"] for g in groups} == {"apps"}
    assert {g["app"] for g in groups} == {"flaskapp:app", "djangoapp:app"}
    nginx = next(g for g in groups if g["variant"] == "nginx" and g["app"] == "flaskapp:app")
    assert [(m["label"], m["variant"]) for m in nginx["members"]] == [
        ("bridge-fcgi", "close"), ("uwsgi-fcgi", "close"), ("bridge-http", "proxy"), ("granian", "proxy"),
        ("gunicorn-gthread", "proxy")]
    direct = [g for g in groups if g["variant"] == "direct" and g["workers"] == 2]
    assert {m["label"] for g in direct for m in g["members"]} == {"bridge", "granian", "uwsgi", "gunicorn-gthread"}
    assert {(route, c) for g in direct if g["app"] == "flaskapp:app" for route, c in g["cases"]} == {
        (route, c) for route in ("/page", "/json") for c in run.LEVELS}
    narrowed = plan_of("--only", "apps", "--workers", "2", "--conc", "64", "--servers", "bridge,granian")
    assert {c for g in narrowed for _, c in g["cases"]} == {64}
    assert {m["peer"].name for g in narrowed for m in g["members"]} == {"bridge", "granian"}


def test_quick_runs_one_small_apps_case_and_granian_is_an_http_peer_of_the_hello_groups():
    apps = [g for g in plan_of("--quick") if g["mode"] == "apps"]
    assert len(apps) == 1 and apps[0]["cases"] == [("/page", 16)]
    assert [m["label"] for m in apps[0]["members"]] == ["bridge", "granian"]
    hello = [g for g in plan_of("--only", "http") if g["variant"] == "direct"]
    assert all("granian" in [m["label"] for m in g["members"]] for g in hello)
    granian = run.find_peer("http", "granian")
    assert not granian.ceiling and granian.workers == (1, 2)


def test_apps_rows_are_compared_with_granian_per_app_and_route():
    flask = dict(mode="apps", variant="direct", workers=2, route="/page", app="flaskapp:app")
    django = dict(flask, app="djangoapp:app")
    results = [row("bridge", 6000, **flask), row("granian", 5000, **flask),
               row("bridge", 3000, **django), row("granian", 4000, **django)]
    run.add_ratios(results)
    assert [r["ratio"] for r in results] == [1.2, 1.0, 0.75, 1.0]
    assert {r["baseline"] for r in results} == {"granian"}


def test_fairload_output_parses_into_wrk_figures_and_the_spread_per_connection():
    line = ('FAIRJSON {"requests": 2000, "duration_us": 2000000, "bytes": 4000000, "connect": 0, "read": 1, '
            '"write": 0, "status": 0, "timeout": 0, "p50": 1500, "p90": 2000, "p99": 4000, "max": 9000, '
            '"mean": 1600.0, "conn_min": 0, "conn_median": 31, "conn_max": 60, "zero_conns": 2}')
    out = load.parse_fairload(line, ["fairload", "127.0.0.1", "1", "/", "64", "2", "2"])
    assert out["rps"] == 1000 and out["p50_ms"] == 1.5 and out["max_ms"] == 9.0
    assert out["wrk_errors"] == {"read": 1}
    assert out["per_conn"] == {"min": 0, "median": 31, "max": 60, "zero": 2}


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


def _serve_http(answer_first: int, body_framing: str):
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers only its first ``answer_first``
    connections (the others are accepted and left waiting): a starving server in miniature."""
    import socket
    import threading
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held = []

    def serve(conn):
        buf = b""
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    if body_framing == "chunked":
                        reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"7\r\nHello, \r\n7\r\nworld!\n\r\n0\r\n\r\n")
                    else:
                        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nHello, world!\n"
                    conn.sendall(reply)

    def accept():
        accepted = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted += 1
            if accepted <= answer_first:
                threading.Thread(target=serve, args=(conn,), daemon=True).start()
            else:
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(2)
        listener.close()
        for conn in held:
            conn.close()
    return listener.getsockname()[1], close


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_fairload_counts_each_connections_requests_and_the_ones_left_waiting(tmp_path, framing):
    """wrk cannot tell connections apart; fairload must, whatever the framing of the answers."""
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    binary = tmp_path / "fairload"
    subprocess.run([cc, "-O2", "-o", str(binary), str(BENCH / "native" / "fairload.c"), "-lpthread"],
                   check=True, capture_output=True, timeout=60)
    port, close = _serve_http(answer_first=3, body_framing=framing)
    try:
        out = load.fairload(binary, port, "/hello", 5, 0.5)
    finally:
        close()
    assert out["requests"] > 30 and out["wrk_errors"] == {}
    assert out["per_conn"]["zero"] == 2 and out["per_conn"]["min"] == 0 and out["per_conn"]["max"] > 10
    assert out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]


def test_issue_18_targets_compare_bridge_with_granian_and_uwsgi_and_judge_fairness():
    flask = dict(mode="apps", variant="direct", workers=2, route="/page", app="flaskapp:app")
    results = [row("bridge", 5000, conc=64, p99_ms=4.0, max_ms=9.0, bridge=True, **flask),
               row("granian", 4500, conc=64, p99_ms=3.0, **flask),
               row("bridge", 30000, conc=256, mode="http", variant="direct", workers=2, bridge=True, p50_ms=1.0,
                   p99_ms=2.5, max_ms=30.0),
               row("uwsgi", 28000, conc=256, mode="http", variant="direct", workers=2),
               row("granian", 55000, conc=256, mode="http", variant="direct", workers=2)]
    got = {t["target"]: t for t in run.speed_targets(results)}
    page = got["issue 18: HTTP Flask page 2 proc >= granian, p99 no worse (c64)"]
    assert page["verdict"] == "missed" and "p99 4.0 vs 3.0 ms" in page["figure"]  # faster, but a worse tail
    hello = got["issue 18: HTTP hello 2 proc >= uWSGI (c256)"]
    assert hello["verdict"] == "met" and "granian 55,000" in hello["figure"]
    assert got["issue 18: fair, /hello HTTP 2 proc c256: p99 <= 3x p50, max <= 10x p50"]["verdict"] == "missed"
    assert not any("c16" in t for t in got)  # nothing about cases the run did not measure


def test_an_app_whose_framework_is_missing_is_reported_missing_for_every_server_bridge_included(monkeypatch):
    """--quick in CI must not fail because the bench venv lacks Flask: that is the environment, not bridge."""
    import types
    monkeypatch.setitem(run.APPS, "flaskapp:app", ("no_such_framework_for_the_test", "Flask", ("/page",)))
    group = next(g for g in plan_of("--quick") if g["mode"] == "apps")
    results = []
    ctx = types.SimpleNamespace(python=Path(sys.executable))
    args = run.parse_args(["--quick"])
    run.run_group(ctx, group, args, results, [])
    assert [(r["server"], r["status"]) for r in results] == [("bridge", "missing"), ("granian", "missing")]
    assert "no_such_framework_for_the_test is not installed" in results[0]["reason"]
