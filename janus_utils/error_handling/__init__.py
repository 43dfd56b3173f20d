"""One error hierarchy for the backend; every error is logged once through janus_utils' logger."""

from __future__ import annotations

from ._base import JanusError

__all__ = ["JanusError"]
