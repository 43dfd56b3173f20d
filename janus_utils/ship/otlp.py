"""Ship records to an OpenTelemetry collector or backend over OTLP/HTTP (protobuf).

Each record becomes one ``LogRecord`` of the OpenTelemetry log data model:

=================  ==========================================================
``ts``             ``time_unix_nano`` (and ``observed_time_unix_nano``)
``level``          ``severity_number`` (TRACE 1, DEBUG 5, INFO 9, WARN 13,
                   ERROR 17, FATAL 21; levels in between step inside the
                   range) and ``severity_text`` (the level's name)
``message``        ``body`` (a string)
``trace_id``       ``trace_id`` / ``span_id`` (16 / 8 bytes) when they are
``span_id``        hex of that length, else attributes ``janus.trace_id`` /
                   ``janus.span_id``
``logger``         the instrumentation scope's name
``service``        resource attribute ``service.name`` (else the exporter's)
``host``           resource attribute ``host.name`` (else the database's)
``pid``            resource attribute ``process.pid`` (one resource per
                   service, host and pid)
``thread``         ``thread.name``
``user_id``        ``enduser.id``
``agent_id``       ``gen_ai.agent.id``; an agent record's ``agent_name``,
                   ``conversation_id``, ``model``, ``operation``, ``tool``,
                   ``input_tokens``... fields become ``gen_ai.*`` attributes
``request_id``     ``janus.request_id``
``exception``      ``exception.stacktrace``, with ``exception.type`` and
                   ``exception.message`` read from its last line
``fields``         one attribute per key (nested values as maps and arrays)
(identity)         ``log.record.uid`` = ``<db_id>-<id>``
=================  ==========================================================

At least once: a batch whose answer was lost is sent again, and a receiver
that deduplicates by ``log.record.uid`` sees each record once.

Requests are written in the protobuf wire format by this module (see the
note above ``_ld``) and answers read with ``opentelemetry-proto`` (the
``[otlp]`` extra), whose classes the tests decode every request with; the
HTTP, retry and environment handling are this package's own.
The ``OTEL_EXPORTER_OTLP_*`` variables are honoured as the OTLP exporter
specification describes (endpoint, headers, timeout in milliseconds,
compression, certificates), with the ``_LOGS_`` forms taking precedence, and
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` for the resource.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .._levels import OTEL_SEVERITY, level_name
from ..error_handling.utils.errors import ConfigError, ShipError
from ._base import Exporter, Identity, check_batch_size, check_timeout, clamp
from ._http import Endpoint, HTTPClient, Retry, retry_after, warn_plain_http

__all__ = ["GENAI_FIELDS", "OTLPExporter", "severity_number"]

# An agent record's fields that have a name in the OpenTelemetry GenAI
# semantic conventions; they are sent under that name.
GENAI_FIELDS: dict[str, str] = {
    "agent_name": "gen_ai.agent.name",
    "agent_description": "gen_ai.agent.description",
    "conversation_id": "gen_ai.conversation.id",
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "tool": "gen_ai.tool.name",
    "tool_name": "gen_ai.tool.name",
    "tool_call_id": "gen_ai.tool.call.id",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}

_STEPS = sorted(OTEL_SEVERITY)


def severity_number(level: int) -> int:
    """The OpenTelemetry SeverityNumber of a stdlib level (1-24).

    The named levels map to the first number of their range (INFO 20 -> 9);
    a level between two named ones steps inside the lower one's range of
    four (25 -> 11).
    """
    exact = OTEL_SEVERITY.get(level)
    if exact is not None:
        return exact
    if level < _STEPS[0]:
        return 1
    base = max(step for step in _STEPS if step <= level)
    higher = [step for step in _STEPS if step > level]
    width = (higher[0] - base) if higher else 10
    return min(OTEL_SEVERITY[base] + min(3, (level - base) * 4 // width), 24)


# ---------------------------------------------------------------- protobuf
# The OTLP messages are written here field by field (proto3 wire format) and
# checked in the tests by decoding them with opentelemetry-proto's classes.
# Filling those classes record by record cost ~40 us a record; this ~12 us.
# Field numbers are those of opentelemetry/proto/{logs,common,resource}/v1.

_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_ONE_BYTE[n] if n < 0x80 else _varint(n)) + payload


def _any_bytes(value: Any, depth: int = 0) -> bytes:
    """An AnyValue's fields for a JSON value (None: no field, the empty AnyValue)."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
        return _ld(b"\x0a", str(value).encode())
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if value is None:
        return b""
    if depth > 32:
        return _ld(b"\x0a", json.dumps(value, default=str).encode("utf-8", "replace"))
    if isinstance(value, list):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any_bytes(item, depth + 1)) for item in value))
    if isinstance(value, dict):
        return _ld(
            b"\x32", b"".join(_ld(b"\x0a", _key_value(str(k), v, depth + 1)) for k, v in value.items())
        )
    return _ld(b"\x0a", str(value).encode("utf-8", "replace"))


def _key_value(key: str, value: Any, depth: int = 0) -> bytes:
    return _ld(b"\x0a", key.encode("utf-8", "replace")) + _ld(b"\x12", _any_bytes(value, depth))


def _key(key: str) -> bytes:
    """A KeyValue's key field, encoded once per constant key."""
    return _ld(b"\x0a", key.encode())


def _str_attr(key: bytes, value: str) -> bytes:
    """A LogRecord attribute (field 6) with a string value; *key* from _key()."""
    return _ld(b"\x32", key + _ld(b"\x12", _ld(b"\x0a", value.encode("utf-8", "replace"))))


_attr_cache: dict[tuple[Any, Any], bytes] = {}


def _cached_attr(key: bytes, value: str) -> bytes:
    """_str_attr for values that repeat (thread names, user and agent ids); the cache is bounded."""
    found = _attr_cache.get((key, value))
    if found is None:
        found = _str_attr(key, value)
        if len(_attr_cache) >= 8192:
            _attr_cache.clear()
        _attr_cache[(key, value)] = found
    return found


_CACHEABLE = frozenset((str, int, bool))


def _field_attr(key: str, value: Any) -> bytes:
    """A field as a LogRecord attribute; short text and numbers repeat, so they are cached."""
    if type(value) in _CACHEABLE and (type(value) is not str or len(value) <= 64):
        cache_key = (key, value if type(value) is str else (type(value), value))
        found = _attr_cache.get(cache_key)
        if found is None:
            found = _ld(b"\x32", _key_value(key, value))
            if len(_attr_cache) >= 8192:
                _attr_cache.clear()
            _attr_cache[cache_key] = found
        return found
    return _ld(b"\x32", _key_value(key, value))


_UID = _key("log.record.uid")
_THREAD = _key("thread.name")
_USER = _key("enduser.id")
_AGENT = _key("gen_ai.agent.id")
_REQUEST = _key("janus.request_id")
_TRACE = _key("janus.trace_id")
_SPAN = _key("janus.span_id")
_EXC_TYPE = _key("exception.type")
_EXC_MESSAGE = _key("exception.message")
_EXC_STACK = _key("exception.stacktrace")
# Attribute names the columns fill; a field of the same name is left out.
_MAPPED = frozenset(
    {
        "log.record.uid", "thread.name", "enduser.id", "gen_ai.agent.id", "janus.request_id",
        "janus.trace_id", "janus.span_id", "exception.type", "exception.message", "exception.stacktrace",
    }
)


def _severity_bytes(level: int) -> bytes:
    """severity_number (field 2) and severity_text (field 3)."""
    return b"\x10" + _varint(severity_number(level)) + _ld(b"\x1a", level_name(level).encode())


_SEVERITY = {level: _severity_bytes(level) for level in OTEL_SEVERITY}


def _env(name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_LOGS_<name>`` first, then ``OTEL_EXPORTER_OTLP_<name>``."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_LOGS_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def _key_values(text: str | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values percent-decoded), as the OTEL_* header and resource variables are written."""
    found: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            found[key.strip()] = urllib.parse.unquote(value.strip())
    return found


def _hex_bytes(text: str | None, size: int) -> bytes | None:
    if not text or len(text) != size * 2:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return value if any(value) else None


def _exception_parts(text: str) -> tuple[str | None, str | None]:
    """(type, message) from a traceback's last line ``module.Type: message``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None, None
    last = lines[-1].strip()
    kind, sep, message = last.partition(": ")
    if " " in kind or not kind:
        return None, last
    return kind, message if sep else None


class OTLPExporter(Exporter):
    """Ship records as OTLP/HTTP protobuf to ``<endpoint>/v1/logs`` (a collector: port 4318).

    Unset arguments come from the ``OTEL_EXPORTER_OTLP_*`` environment
    variables, then the specification's defaults (``http://localhost:4318``,
    10 s).  *headers* carry auth (``{"Authorization": "Bearer ..."}``);
    ``https://`` endpoints use TLS (*certificate_file* for a private CA,
    *client_certificate_file*/*client_key_file* for mutual TLS).
    *service_name* and *resource* set resource attributes (defaults from
    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``).
    """

    kind = "otlp"

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        compression: str | None = None,
        service_name: str | None = None,
        resource: Mapping[str, Any] | None = None,
        certificate_file: str | None = None,
        client_certificate_file: str | None = None,
        client_key_file: str | None = None,
        name: str | None = None,
        host: str | None = None,
        batch_size: int = 2_000,
    ) -> None:
        try:
            from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
            from opentelemetry.proto.common.v1 import common_pb2
            from opentelemetry.proto.logs.v1 import logs_pb2
            from opentelemetry.proto.resource.v1 import resource_pb2
        except ImportError:
            raise ConfigError(
                "OTLPExporter needs the opentelemetry-proto package: pip install 'janus_utils[otlp]'"
            ) from None
        self._service = logs_service_pb2
        self._common = common_pb2
        self._logs = logs_pb2
        self._resource = resource_pb2
        if endpoint is None:
            full = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
            base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
        else:
            full, base = None, endpoint
        if full is None:
            # A base endpoint gets the signal's path appended (OTLP exporter spec).
            full = base.rstrip("/") + ("" if base.rstrip("/").endswith("/v1/logs") else "/v1/logs")
        self.endpoint, user, password = Endpoint.parse(full, default_port=4318, what="OTLP endpoint")
        if user or password:
            raise ConfigError("put OTLP credentials in headers={'Authorization': ...}, not in the endpoint URL")
        self.headers = {**_key_values(_env("HEADERS")), **dict(headers or {})}
        if timeout is None:
            ms = _env("TIMEOUT")
            try:
                timeout = float(ms) / 1000 if ms else 10.0
            except ValueError:
                raise ConfigError(f"OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, not {ms!r}") from None
        self.timeout = check_timeout(timeout)
        compression = compression if compression is not None else (_env("COMPRESSION") or "none")
        if compression not in ("gzip", "none"):
            raise ConfigError(f"compression must be 'gzip' or 'none', not {compression!r}")
        self.compression = compression
        self.certificate_file = certificate_file or _env("CERTIFICATE")
        self.client_certificate_file = client_certificate_file or _env("CLIENT_CERTIFICATE")
        self.client_key_file = client_key_file or _env("CLIENT_KEY")
        attributes: dict[str, Any] = dict(_key_values(os.environ.get("OTEL_RESOURCE_ATTRIBUTES")))
        attributes.update(resource or {})
        service = service_name or os.environ.get("OTEL_SERVICE_NAME") or attributes.get("service.name") or "unknown_service:janus_utils"
        attributes["service.name"] = service
        self.resource_attributes = attributes
        self.host = host
        self.batch_size = check_batch_size(batch_size)
        self.name = name or f"otlp+{self.endpoint.scheme}://{self.endpoint.netloc}{self.endpoint.path}"
        self._client: HTTPClient | None = None

    def __repr__(self) -> str:
        return f"<OTLPExporter {self.name}>"

    @property
    def client(self) -> HTTPClient:
        if self._client is None:
            warn_plain_http(self.endpoint, "OTLP endpoint")
            path_endpoint = Endpoint(self.endpoint.scheme, self.endpoint.host, self.endpoint.port, "")
            self._client = HTTPClient(
                [path_endpoint],
                headers=dict(self.headers),
                timeout=self.timeout,
                ca_file=self.certificate_file,
                cert_file=self.client_certificate_file,
                key_file=self.client_key_file,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------ encoding
    def _resource_bytes(self, identity: Identity, service: str | None, host: str | None, pid: int | None) -> bytes:
        attrs = dict(self.resource_attributes)
        if service is not None:  # the row's configure(service=...) wins over the exporter's
            attrs["service.name"] = service
        attrs["host.name"] = host if host is not None else identity.host
        if pid is not None:
            attrs["process.pid"] = clamp(pid)
        return b"".join(_ld(b"\x0a", _key_value(key, value)) for key, value in attrs.items())

    def record_bytes(self, row: tuple[Any, ...], identity: Identity, uid_prefix: str | None = None) -> bytes:
        """One stored row as an encoded OTLP LogRecord."""
        rid, ts, level, _logger, message, user, agent, request, trace, span, _pid, thread, exc, fields = row[:14]
        time_ns = _FIXED64(ts if ts > 0 else 0)
        parts = [
            b"\x09" + time_ns,
            _SEVERITY.get(level) or _severity_bytes(level),
            _ld(b"\x2a", _ld(b"\x0a", message.encode("utf-8", "replace"))),
            _str_attr(_UID, (uid_prefix or identity.db_id + "-") + str(rid)),
        ]
        add = parts.append
        seen = _MAPPED
        if thread is not None:
            add(_cached_attr(_THREAD, thread))
        if user is not None:
            add(_cached_attr(_USER, user))
        if agent is not None:
            add(_cached_attr(_AGENT, agent))
        if request is not None:
            add(_str_attr(_REQUEST, request))
        trace_bytes = span_bytes = None
        if trace is not None:
            trace_bytes = _hex_bytes(trace, 16)
            if trace_bytes is None:
                add(_str_attr(_TRACE, trace))
        if span is not None:
            span_bytes = _hex_bytes(span, 8)
            if span_bytes is None:
                add(_str_attr(_SPAN, span))
        if exc:
            kind, detail = _exception_parts(exc)
            if kind:
                add(_str_attr(_EXC_TYPE, kind))
            if detail:
                add(_str_attr(_EXC_MESSAGE, detail))
            add(_str_attr(_EXC_STACK, exc))
        if fields:
            try:
                parsed = json.loads(fields)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                parsed = {"janus.fields": fields}
            for key, value in parsed.items():
                key = str(key)
                if agent is not None and key in GENAI_FIELDS:
                    key = GENAI_FIELDS[key]
                if key in seen:
                    continue  # a field named like a mapped attribute: the column wins
                if seen is _MAPPED:
                    seen = set(_MAPPED)
                seen.add(key)
                add(_field_attr(key, value))
        if trace_bytes is not None:
            add(b"\x4a\x10" + trace_bytes)
        if span_bytes is not None:
            add(b"\x52\x08" + span_bytes)
        add(b"\x59" + time_ns)
        return b"".join(parts)

    def request_bytes(self, rows: list[tuple[Any, ...]], identity: Identity) -> bytes:
        """An encoded ExportLogsServiceRequest: one resource per (service, host, pid), one scope per logger.

        Both in the order first seen, so the same rows give the same bytes.
        """
        groups: dict[Any, dict[str, list[bytes]]] = {}
        uid_prefix = identity.db_id + "-"
        encode = self.record_bytes
        for row in rows:
            resource = (row[14], row[15], row[10])
            by_scope = groups.get(resource)
            if by_scope is None:
                by_scope = groups[resource] = {}
            records = by_scope.get(row[3])
            if records is None:
                records = by_scope[row[3]] = []
            records.append(_ld(b"\x12", encode(row, identity, uid_prefix)))
        out = []
        for (service, host, pid), scopes in groups.items():
            body = [_ld(b"\x0a", self._resource_bytes(identity, service, host, pid))]
            for scope, records in scopes.items():
                scope_name = _ld(b"\x0a", _ld(b"\x0a", scope.encode("utf-8", "replace")))
                body.append(_ld(b"\x12", scope_name + b"".join(records)))
            out.append(_ld(b"\x0a", b"".join(body)))
        return b"".join(out)

    def request_message(self, rows: list[tuple[Any, ...]], identity: Identity) -> Any:
        """The same request as an ``opentelemetry-proto`` message (for inspection and tests)."""
        message = self._service.ExportLogsServiceRequest()
        message.ParseFromString(self.request_bytes(rows, identity))
        return message

    def encode(self, rows: list[tuple[Any, ...]], identity: Identity) -> bytes:
        body = self.request_bytes(rows, identity)
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=1, mtime=0)
        return body

    # ------------------------------------------------------------ sending
    def send(self, body: bytes) -> int:
        headers = {"Content-Type": "application/x-protobuf"}
        if self.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        response = self.client.post(self.endpoint.path, body, headers)
        status = response.status
        if status == 200:
            return self._accepted(response.body)
        text = " ".join(response.body[:300].decode("utf-8", "replace").split())
        if status == 429 or status >= 500:
            # 429, 502, 503 and 504 are retryable in the OTLP spec; other 5xx
            # are retried too, as a server error says nothing about the records.
            raise Retry(f"HTTP {status} from {self.endpoint}: {text or 'no message'}", retry_after=retry_after(response.headers))
        hint = {
            400: "the collector could not read the request",
            401: "authentication failed: check the headers",
            403: "not allowed: check the headers",
            404: f"no OTLP logs receiver at {self.endpoint}",
            413: "the request is too large: lower batch_size",
        }.get(status, "")
        raise ShipError(f"HTTP {status} from {self.endpoint}{': ' + hint if hint else ''} ({text or 'no message'})")

    def _accepted(self, body: bytes) -> int:
        if not body:
            return 0
        response = self._service.ExportLogsServiceResponse()
        try:
            response.ParseFromString(body)
        except Exception:
            raise ShipError(
                f"a malformed answer from {self.endpoint}: HTTP 200 but not an ExportLogsServiceResponse "
                f"({body[:80]!r}); is it an OTLP/HTTP receiver?"
            ) from None
        # Partial success: the receiver dropped these for good; sending them
        # again would not change that (OTLP spec), so they are counted.
        return int(response.partial_success.rejected_log_records)

