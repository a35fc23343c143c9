"""Test-wide setup: tests/ on sys.path (for ``support``), src/ ahead of any installed copy."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in (str(HERE.parent / "src"), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)
