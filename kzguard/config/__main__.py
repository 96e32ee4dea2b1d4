"""``python -m kzguard.config > docs/config.md`` prints the generated configuration docs."""

import sys

from kzguard.config.docs import render_docs

sys.stdout.write(render_docs())
