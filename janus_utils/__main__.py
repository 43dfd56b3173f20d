"""``python -m janus_utils``: the janus-logs command."""

from .cli import main

raise SystemExit(main())
