"""docs/http.md shows the nginx config the tests load and the options the code declares."""
from __future__ import annotations

import re

from bridge.config import load_declarations, option_table
from support import ROOT

DOC = ROOT / "docs" / "http.md"


def test_http_doc_shows_every_nginx_config_the_tests_load_verbatim():
    doc = DOC.read_text()
    for conf in sorted((ROOT / "docs" / "nginx").glob("http-*.conf")):
        assert conf.read_text().rstrip("\n") in doc, f"{conf.name} is not shown verbatim in docs/http.md"


def test_http_doc_option_table_is_the_generated_one():
    doc = DOC.read_text()
    start = doc.index("<!-- generated from src/bridge/http/options.py -->")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->", start)]
    names = re.findall(r'setting\("(\w+)"', (ROOT / "src" / "bridge" / "http" / "options.py").read_text())
    declared = load_declarations()
    heads = tuple("| " + ", ".join(f"`{f}`" for f in declared[n].flags) + " |" for n in names)
    rows = option_table("http").splitlines()
    assert table.splitlines() == rows[:2] + [r for r in rows if r.startswith(heads)]
