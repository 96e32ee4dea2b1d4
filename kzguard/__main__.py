"""Allow ``python -m kzguard``."""

from kzguard.cli import main

raise SystemExit(main())
