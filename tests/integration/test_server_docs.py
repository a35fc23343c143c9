"""docs/operations.md and docs/scaling.md say what the code and the tested configs are."""
from pathlib import Path

from bridge.config import load_declarations, option_table

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_operations_option_table_is_the_generated_one():
    doc = (DOCS / "operations.md").read_text()
    start = doc.index("<!-- generated from src/bridge/server/options.py")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->")]
    mine = [s for s in load_declarations().values() if s.section in ("server", "processes", "status")]
    heads = tuple("| " + ", ".join(f"`{f}`" for f in s.flags) + " |" for s in mine)
    generated = option_table().splitlines()
    assert table.splitlines() == generated[:2] + [row for row in generated if row.startswith(heads)]


def test_scaling_guide_shows_the_nginx_config_the_tests_load():
    doc = (DOCS / "scaling.md").read_text()
    assert (DOCS / "scaling-nginx.conf").read_text() in doc
