"""``python -m pyflashattn bench ...``: the same as the ``pyflashattn`` console script."""
from .cli import main

raise SystemExit(main())
