"""Errors of optional integrations: an extension that will not load or is set up wrongly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._base import JanusError
from ..utils.errors import ConfigError

__all__ = ["ExtensionConfigError", "ExtensionError", "ExtensionLoadError"]


class ExtensionError(JanusError):
    """An extension failed; *extension* names it (``"flask"``, a SQLite extension's path)."""

    code = "extension_error"
    title = "Extension error"

    def __init__(
        self,
        message: str | None = None,
        *,
        extension: str | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.extension = extension
        merged = dict(details) if details else {}
        if extension is not None:
            merged.setdefault("extension", extension)
        super().__init__(message, code=code, details=merged, http_status=http_status)


class ExtensionLoadError(ExtensionError):
    """An extension could not be imported or loaded: not installed, or the wrong version."""

    code = "extension_load_error"
    title = "Extension could not be loaded"


class ExtensionConfigError(ExtensionError, ConfigError):
    """An extension was given settings it cannot use; also a :class:`ConfigError`."""

    code = "extension_config_error"
    title = "Extension misconfigured"
