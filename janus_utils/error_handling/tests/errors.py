"""Errors of test support: the test environment itself is not set up as the test needs."""

from __future__ import annotations

from .._base import JanusError

__all__ = ["FixtureError", "TestSetupError"]


class TestSetupError(JanusError):
    """A test's environment is wrong: a fixture used wrongly, a setting the test relies on missing."""

    __test__ = False  # a class named Test* that pytest must not collect
    code = "test_setup_error"
    title = "Test setup failed"


class FixtureError(TestSetupError):
    """A fixture could not provide what it promises."""

    code = "fixture_error"
    title = "Fixture failed"
