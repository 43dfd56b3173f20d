"""Extension and utils errors: what an integration that will not load or is misconfigured raises."""

from __future__ import annotations

import pytest

from janus_utils.error_handling import (
    ConfigError,
    ExtensionConfigError,
    ExtensionError,
    ExtensionLoadError,
    FileHandlerError,
    RecordTooLargeError,
    RingError,
    RingFormatError,
    RingFullError,
    SearchQueryError,
    SecurityError,
)


class TestExtensionErrors:
    def test_extension_is_named_in_details(self) -> None:
        """extension= is an attribute and a detail for the log."""
        err = ExtensionLoadError("flask is not installed", extension="flask")
        assert ("flask", {"extension": "flask"}) == (err.extension, err.details)

    def test_config_error_catches_extension_settings(self) -> None:
        """A misconfigured extension is caught by 'except ConfigError' too."""
        with pytest.raises(ConfigError) as info:
            raise ExtensionConfigError("cors origins must be a list", extension="cors")
        assert ("extension_config_error", True) == (
            info.value.code,
            isinstance(info.value, ExtensionError),
        )

    def test_server_side_errors_hide_their_text(self) -> None:
        """Extension errors are 500s: the client sees the kind, not the module path."""
        body = ExtensionLoadError("cannot import /opt/app/ext.so", extension="ext").to_dict()
        assert ("extension_load_error", 500) == (body["code"], body["status"])
        assert "/opt" not in repr(body)


class TestUtilsErrors:
    @pytest.mark.parametrize(
        ("cls", "code", "status"),
        [
            (ConfigError, "config_error", 500),
            (FileHandlerError, "file_error", 500),
            (SecurityError, "security_error", 400),
            (SearchQueryError, "search_query_error", 400),
            (RingError, "ring_error", 500),
            (RingFormatError, "ring_format_error", 500),
            (RingFullError, "ring_full", 500),
            (RecordTooLargeError, "record_too_large", 500),
        ],
    )
    def test_codes_and_statuses_are_unchanged(self, cls: type[ConfigError], code: str, status: int) -> None:
        """The errors janus_utils' own modules raise keep their codes and statuses."""
        err = cls("m")
        assert (code, status, "m") == (err.code, err.http_status, err.message)

    def test_ring_errors_share_a_base(self) -> None:
        """Every ring failure is a RingError."""
        assert all(issubclass(c, RingError) for c in (RingFormatError, RingFullError, RecordTooLargeError))
