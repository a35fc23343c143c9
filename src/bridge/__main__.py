"""``python -m bridge`` is the ``bridge`` command."""
from bridge import main

raise SystemExit(main())
