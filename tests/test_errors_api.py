"""API errors: what each tells a client, its headers and its problem-body members."""

from __future__ import annotations

import pytest

from janus_utils import security
from janus_utils.error_handling import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
    ValidationError,
)


class TestClientErrors:
    @pytest.mark.parametrize(
        ("cls", "status", "code"),
        [
            (BadRequest, 400, "bad_request"),
            (Unauthorized, 401, "unauthorized"),
            (Forbidden, 403, "forbidden"),
            (NotFound, 404, "not_found"),
            (Conflict, 409, "conflict"),
            (RateLimited, 429, "rate_limited"),
        ],
    )
    def test_status_code_and_message_reach_the_client(
        self, cls: type[BadRequest], status: int, code: str
    ) -> None:
        """A 4xx body carries its status, its code and the message as written."""
        body = cls("Say what you want.").to_dict()
        assert (status, code, "Say what you want.") == (body["status"], body["code"], body["detail"])

    def test_unauthorized_names_the_scheme(self) -> None:
        """www_authenticate becomes the WWW-Authenticate header; none by default."""
        assert {"WWW-Authenticate": 'Bearer realm="api"'} == Unauthorized(
            www_authenticate='Bearer realm="api"'
        ).headers
        assert {} == Unauthorized().headers


class TestRateLimited:
    def test_retry_after_header_and_member(self) -> None:
        """retry_after, rounded up to whole seconds, is a header and a body member."""
        err = RateLimited("Slow down.", retry_after=2.1)
        assert ({"Retry-After": "3"}, 3) == (err.headers, err.to_dict()["retry_after"])

    def test_without_retry_after(self) -> None:
        """No retry_after: no header, no member."""
        err = RateLimited()
        assert ({}, False) == (err.headers, "retry_after" in err.to_dict())

    @pytest.mark.parametrize("bad", [-1, True])
    def test_rejects_a_nonsense_wait(self, bad: object) -> None:
        """A negative or boolean retry_after is a programming error, said at once."""
        with pytest.raises(ValueError, match="retry_after"):
            RateLimited(retry_after=bad)  # type: ignore[arg-type]


class TestValidationError:
    def test_existing_attributes_are_kept(self) -> None:
        """field, reason, errors and details['errors'] work as before."""
        err = ValidationError(field="email", reason="not an address")
        assert ("email", "not an address") == (err.field, err.reason)
        assert [{"field": "email", "reason": "not an address"}] == err.errors
        assert err.errors == err.details["errors"]
        assert "[validation_error] email: not an address" == str(err)

    def test_many_fields_in_one_response(self) -> None:
        """errors= reports every rejected field in the body's 'errors' member."""
        errors = [{"field": "email", "reason": "missing"}, {"field": "age", "reason": "negative"}]
        body = ValidationError("2 fields rejected", errors=errors).to_dict()
        assert (422, errors) == (body["status"], body["errors"])

    def test_security_validators_raise_it(self) -> None:
        """security.validate_* reject input with this error, which renders as a 422 body."""
        with pytest.raises(ValidationError) as info:
            security.validate_email("not-an-email", field="contact")
        body = info.value.to_dict()
        assert ("validation_error", "contact") == (body["code"], body["errors"][0]["field"])

    def test_is_a_bad_request(self) -> None:
        """'except BadRequest' also catches validation failures."""
        with pytest.raises(BadRequest):
            raise ValidationError(field="x", reason="y")


class TestUpstreamError:
    def test_service_is_logged_not_shown(self) -> None:
        """The service name is in details for the log; a 502 body leaves details out."""
        err = UpstreamError("billing timed out", service="billing")
        assert {"service": "billing"} == err.details
        assert "details" not in err.to_dict()
        assert "billing" not in err.to_dict()["detail"]
