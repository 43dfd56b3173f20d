"""JanusError and the hierarchy: codes, statuses, str(), the cause chain and the problem body."""

from __future__ import annotations

import pickle
import re

import janus_utils
import janus_utils.error_handling as eh
from janus_utils.error_handling import (
    ConfigError,
    InternalError,
    JanusError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    UpstreamError,
    ValidationError,
    cause_chain,
)
from janus_utils.error_handling._base import exception_name


def all_error_classes() -> list[type[JanusError]]:
    found: set[type[JanusError]] = set()
    todo = [JanusError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())  # a class with two janus bases comes twice
    return sorted(
        (cls for cls in found if cls.__module__.startswith("janus_utils.")),
        key=lambda cls: cls.__name__,
    )


class TestPublicNames:
    def test_all_is_alphabetised_and_every_name_resolves(self) -> None:
        """__all__ is sorted and every listed name, lazy ones included, can be imported."""
        assert sorted(eh.__all__) == eh.__all__
        for name in eh.__all__:
            assert getattr(eh, name) is not None

    def test_every_error_class_is_exported(self) -> None:
        """Each concrete error class of the hierarchy is importable from the package."""
        missing = {cls.__name__ for cls in all_error_classes()} - set(eh.__all__)
        assert set() == missing

    def test_top_level_janus_error_is_this_one(self) -> None:
        """janus_utils.JanusError is the base of this hierarchy."""
        assert JanusError is janus_utils.JanusError


class TestHierarchy:
    def test_codes_are_unique_snake_case(self) -> None:
        """Every class has its own stable snake_case code, a title and an HTTP status."""
        classes = all_error_classes()
        codes = [cls.code for cls in classes]
        assert len(codes) == len(set(codes)), sorted(codes)
        for cls in classes:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls
            assert cls.title and cls.title[0].isupper(), cls
            assert 400 <= cls.http_status <= 599, cls

    def test_statuses_of_the_brief(self) -> None:
        """Each area's errors carry the status a client should see."""
        expected = {
            "BadRequest": 400,
            "Unauthorized": 401,
            "Forbidden": 403,
            "NotFound": 404,
            "Conflict": 409,
            "ValidationError": 422,
            "RateLimited": 429,
            "UpstreamError": 502,
            "IntegrityError": 409,
            "RecordNotFound": 404,
            "DatabaseTimeout": 503,
            "DatabaseConnectionError": 503,
            "MigrationError": 500,
            "RouteNotFound": 404,
            "MethodNotAllowed": 405,
            "InternalError": 500,
        }
        assert expected == {name: getattr(eh, name).http_status for name in expected}

    def test_family_relations(self) -> None:
        """A route miss is a NotFound, validation a BadRequest, an extension setting a ConfigError."""
        assert issubclass(eh.RouteNotFound, eh.NotFound)
        assert issubclass(eh.ValidationError, eh.BadRequest)
        assert issubclass(eh.ExtensionConfigError, eh.ConfigError)
        assert issubclass(eh.IntegrityError, eh.DatabaseError)


class TestJanusError:
    def test_str_is_code_and_message(self) -> None:
        """str() reads '[code] message'; the message defaults to the title."""
        assert "[not_found] No user 7" == str(NotFound("No user 7"))
        assert "[not_found] Not found" == str(NotFound())

    def test_constructor_overrides(self) -> None:
        """code, http_status and details can be set per instance; details is copied."""
        details = {"user_id": 7}
        err = JanusError("gone", code="user_gone", http_status=410, details=details)
        details["user_id"] = 8
        assert ("user_gone", 410, {"user_id": 7}) == (err.code, err.http_status, err.details)

    def test_repr_names_everything(self) -> None:
        """repr() shows class, message, code, status and details."""
        err = NotFound("No user 7", details={"user_id": 7})
        assert (
            "NotFound('No user 7', code='not_found', http_status=404, details={'user_id': 7})"
            == repr(err)
        )

    def test_log_level_follows_status(self) -> None:
        """4xx logs at WARNING, 5xx at ERROR."""
        assert ("WARNING", "ERROR") == (NotFound().log_level, UpstreamError().log_level)

    def test_pickles_with_its_attributes(self) -> None:
        """Errors cross process boundaries intact (multiprocessing pickles them)."""
        for err in (
            ValidationError(field="email", reason="not an address"),
            RateLimited(retry_after=3),
            MethodNotAllowed(allowed=["GET"]),
            NotFound("x", details={"id": 1}),
        ):
            copy = pickle.loads(pickle.dumps(err))
            assert (type(err), str(err), err.details, err.headers) == (
                type(copy),
                str(copy),
                copy.details,
                copy.headers,
            )

    def test_existing_utils_errors_keep_their_signature(self) -> None:
        """Errors other modules raise still take a message and the common keywords."""
        err = ConfigError("bad level", details={"option": "level"})
        assert ("config_error", 500, "bad level") == (err.code, err.http_status, err.message)


class TestCauseChain:
    def test_follows_cause_and_context(self) -> None:
        """The chain lists the error, then what it was raised from, then what was being handled."""
        try:
            try:
                try:
                    raise KeyError("user")
                except KeyError:
                    raise ValueError("bad row")  # implicit __context__
            except ValueError as exc:
                raise NotFound("No user") from exc
        except NotFound as err:
            chain = err.cause_chain()
        assert [
            ("NotFound", "[not_found] No user"),
            ("ValueError", "bad row"),
            ("KeyError", "'user'"),
        ] == chain

    def test_from_none_hides_the_context(self) -> None:
        """'raise ... from None' ends the chain, as in a printed traceback."""
        try:
            try:
                raise KeyError("user")
            except KeyError:
                raise NotFound("No user") from None
        except NotFound as err:
            assert [("NotFound", "[not_found] No user")] == cause_chain(err)

    def test_a_cycle_ends(self) -> None:
        """An exception that is its own cause does not loop forever."""
        err = ValueError("loop")
        err.__cause__ = err
        assert [("ValueError", "loop")] == cause_chain(err)

    def test_foreign_types_are_module_qualified(self) -> None:
        """Built-ins and janus errors by bare name, anything else with its module."""
        import apsw

        assert ("KeyError", "NotFound", "apsw.ConstraintError") == (
            exception_name(KeyError()),
            exception_name(NotFound()),
            exception_name(apsw.ConstraintError),
        )

    def test_unprintable_exception(self) -> None:
        """An exception whose str() raises still gets a chain entry."""

        class Broken(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no")

        assert "<unprintable Broken object>" == cause_chain(Broken())[0][1]


class TestToDict:
    def test_client_error_shape(self) -> None:
        """A 4xx shows type, title, status, detail, instance, code and its details."""
        err = NotFound("No user 7", details={"user_id": 7})
        assert {
            "type": "urn:janus:error:not_found",
            "title": "Not found",
            "status": 404,
            "detail": "No user 7",
            "instance": "/users/7",
            "code": "not_found",
            "details": {"user_id": 7},
        } == err.to_dict(instance="/users/7")

    def test_minimal_shape(self) -> None:
        """Without an instance or details, those members are left out."""
        assert {
            "type": "urn:janus:error:bad_request",
            "title": "Bad request",
            "status": 400,
            "detail": "Bad request",
            "code": "bad_request",
        } == eh.BadRequest().to_dict()

    def test_server_error_hides_message_and_details(self) -> None:
        """A 5xx says what kind of failure and the error id, not its message or details."""
        err = UpstreamError("billing at 10.0.0.5 said 500", service="billing")
        body = err.to_dict(error_id="err_1")
        assert {
            "type": "urn:janus:error:upstream_error",
            "title": "Upstream service failed",
            "status": 502,
            "detail": "The server could not complete the request. "
            "Quote error id err_1 when reporting it.",
            "code": "upstream_error",
            "error_id": "err_1",
        } == body

    def test_exposure_can_be_chosen_per_class(self) -> None:
        """expose_message / expose_details override the status rule."""

        class Maintenance(JanusError):
            code = "maintenance"
            http_status = 503
            title = "Down for maintenance"
            expose_message = True

        assert "Back at 10:00 UTC." == Maintenance("Back at 10:00 UTC.").to_dict()["detail"]

    def test_secrets_never_reach_the_body(self) -> None:
        """A password in details, message or instance is redacted."""
        err = eh.BadRequest(
            "login failed for password=hunter2",
            details={"user": "ann", "password": "hunter2", "nested": {"api_key": "k-123"}},
        )
        body = err.to_dict(instance="/login?password=hunter2")
        assert "hunter2" not in repr(body) and "k-123" not in repr(body)
        assert "[REDACTED:password]" == body["details"]["password"]
        assert "ann" == body["details"]["user"]

    def test_extension_members_are_not_repeated_in_details(self) -> None:
        """ValidationError's errors appear once, as the 'errors' member."""
        body = ValidationError(field="email", reason="not an address").to_dict()
        assert [{"field": "email", "reason": "not an address"}] == body["errors"]
        assert "details" not in body

    def test_internal_error_is_the_generic_500(self) -> None:
        """InternalError, the body for unknown exceptions, is a plain 500."""
        body = InternalError().to_dict()
        assert ("internal_error", 500) == (body["code"], body["status"])
