"""Real servers on loopback for the shipping tests and benchmarks: ZooKeeper, ClickHouse, an OTLP receiver.

Nothing here is a mock.  :class:`ClickHouseCluster` runs the Debian
``zookeeper`` package's server class and two ``clickhouse-server`` replicas
from configs generated in a temporary directory, on free loopback ports;
:class:`OTLPReceiver` is an HTTP server that decodes ``ExportLogsServiceRequest``
with ``opentelemetry-proto`` and can be told to fail, stall or drop the
connection.  Both stop everything they started.

Start order matters (18.16 can crash later in its DDL worker when it starts
before ZooKeeper accepts sessions): ZooKeeper first, until its ``srvr`` command
reports a ``Mode:`` line; then the replicas, each until ``/ping`` answers; then
one ``ON CLUSTER`` statement must be answered by both before the cluster is used.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ClickHouseCluster",
    "OTLPReceiver",
    "clickhouse_missing",
    "free_port",
]

CLUSTER = "janus_test"
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clickhouse_missing() -> str | None:
    """Why the ClickHouse tests cannot run here, or None when they can."""
    missing = [
        what
        for what, present in (
            ("clickhouse-server (Debian package clickhouse-server)", shutil.which("clickhouse-server")),
            ("java (a dependency of the Debian package zookeeper)", shutil.which("java")),
            ("ZooKeeper's server jar (Debian package zookeeper)", os.path.exists(ZOOKEEPER_JAR)),
        )
        if not present
    ]
    if missing:
        return "not installed: " + ", ".join(missing) + " (.ci/apt-packages lists them)"
    return None


def _four_letter(port: int, word: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _wait(what: str, ready: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting:\n{tail}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Replica:
    """One clickhouse-server process and its ports."""

    name: str
    directory: Path
    http_port: int
    tcp_port: int
    interserver_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def query(self, sql: str, *, data: bytes | None = None, timeout: float = 30.0, **settings: Any) -> str:
        """Run *sql* over HTTP; returns the body, raises RuntimeError with the server's message."""
        params = urllib.parse.urlencode({"query": sql, **{k: str(v) for k, v in settings.items()}})
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request("POST", "/?" + params, body=data or b"")
            response = conn.getresponse()
            body = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status}: {body.strip()[:500]}")
        return body

    def ping(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1.0)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().read().strip() == b"Ok."
        finally:
            conn.close()


class ClickHouseCluster:
    """ZooKeeper and two ClickHouse replicas of one shard, cluster ``janus_test``, on loopback."""

    def __init__(self, root: Path | None = None, replicas: int = 2) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="janus-ch-"))
        self._own_root = root is None
        self.zk_port = free_port()
        self.zk_proc: subprocess.Popen[bytes] | None = None
        self.replicas = [
            Replica(f"r{n + 1}", self.root / f"r{n + 1}", free_port(), free_port(), free_port())
            for n in range(replicas)
        ]
        self.cluster = CLUSTER

    # ------------------------------------------------------------ lifecycle
    def start(self) -> ClickHouseCluster:
        try:
            self._start_zookeeper()
            for replica in self.replicas:
                self._write_config(replica)
                self.start_replica(replica)
            self._check_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            _stop(replica.proc)
        _stop(self.zk_proc)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClickHouseCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    # ------------------------------------------------------------ ZooKeeper
    def _start_zookeeper(self) -> None:
        zk = self.root / "zookeeper"
        (zk / "data").mkdir(parents=True, exist_ok=True)
        cfg = zk / "zoo.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "tickTime=500",
                    "initLimit=10",
                    "syncLimit=5",
                    f"dataDir={zk / 'data'}",
                    f"clientPort={self.zk_port}",
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=100",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=srvr,ruok",
                    # A throwaway test server: no fsync per transaction.
                    "forceSync=no",
                    # Short sessions: a SIGKILLed replica's ephemeral nodes go quickly.
                    "minSessionTimeout=2000",
                    "maxSessionTimeout=10000",
                    "",
                ]
            )
        )
        log = zk / "zookeeper.log"
        with open(log, "wb") as out:
            self.zk_proc = subprocess.Popen(
                ["java", "-Xmx256m", "-XX:+UseSerialGC", "-cp", ZOOKEEPER_JAR, ZOOKEEPER_MAIN, str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        # ruok says imok before sessions are accepted; srvr's Mode: line means it serves.
        _wait("ZooKeeper", lambda: b"Mode:" in _four_letter(self.zk_port, b"srvr"), 60, self.zk_proc, log)

    # ------------------------------------------------------------ ClickHouse
    def _write_config(self, replica: Replica) -> None:
        d = replica.directory
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        remote = "\n".join(
            f"<replica><host>127.0.0.1</host><port>{r.tcp_port}</port></replica>" for r in self.replicas
        )
        (d / "users.xml").write_text(
            """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""
        )
        (d / "config.xml").write_text(
            f"""<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{d / 'log' / 'server.log'}</log>
    <errorlog>{d / 'log' / 'server.err.log'}</errorlog>
    <size>50M</size><count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{replica.http_port}</http_port>
  <tcp_port>{replica.tcp_port}</tcp_port>
  <interserver_http_port>{replica.interserver_port}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>30</keep_alive_timeout>
  <max_concurrent_queries>64</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>67108864</mark_cache_size>
  <path>{d / 'data'}/</path>
  <tmp_path>{d / 'tmp'}/</tmp_path>
  <user_files_path>{d / 'user_files'}/</user_files_path>
  <format_schema_path>{d / 'format_schemas'}/</format_schema_path>
  <users_config>{d / 'users.xml'}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <remote_servers>
    <{self.cluster}><shard><internal_replication>true</internal_replication>{remote}</shard></{self.cluster}>
  </remote_servers>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{self.zk_port}</port></node>
    <session_timeout_ms>4000</session_timeout_ms>
  </zookeeper>
  <macros><shard>01</shard><replica>{replica.name}</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
  <max_session_timeout>3600</max_session_timeout>
  <default_session_timeout>60</default_session_timeout>
</yandex>
"""
        )

    def start_replica(self, replica: Replica) -> None:
        """Start (or restart) *replica* and wait until it answers."""
        log = replica.directory / "log" / "stdout.log"
        with open(log, "ab") as out:
            replica.proc = subprocess.Popen(
                ["clickhouse-server", f"--config-file={replica.directory / 'config.xml'}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=replica.directory,
                start_new_session=True,
            )
        _wait(f"clickhouse-server {replica.name}", replica.ping, 60, replica.proc, log)

    def stop_replica(self, replica: Replica, *, kill: bool = False) -> None:
        if replica.proc is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(replica.proc.pid, signal.SIGKILL)
            replica.proc.wait()
        else:
            _stop(replica.proc, timeout=30)
        replica.proc = None

    def restart_replica(self, replica: Replica, *, kill: bool = False) -> None:
        self.stop_replica(replica, kill=kill)
        self.start_replica(replica)

    def _check_cluster(self) -> None:
        """One ON CLUSTER statement answered by every replica before the cluster is used."""
        answer = self.replicas[0].query(
            f"CREATE DATABASE IF NOT EXISTS janus_probe ON CLUSTER {self.cluster}", timeout=120
        )
        hosts = [line for line in answer.splitlines() if line.strip()]
        if len(hosts) < len(self.replicas):
            raise RuntimeError(f"ON CLUSTER answered by {len(hosts)} of {len(self.replicas)} replicas: {answer!r}")
        for replica in self.replicas:
            _wait(
                f"{replica.name} sees the probe database",
                lambda r=replica: "janus_probe" in r.query("SHOW DATABASES"),
                30,
                replica.proc,
                None,
            )

    def query(self, sql: str, **settings: Any) -> str:
        """Run *sql* on the first replica that answers."""
        last: Exception | None = None
        for replica in self.replicas:
            if replica.proc is None:
                continue
            try:
                return replica.query(sql, **settings)
            except (OSError, RuntimeError) as err:
                last = err
        raise RuntimeError(f"no replica answered: {last}")

    def sync(self, table: str) -> None:
        """Wait until every running replica has every part of *table*."""
        for replica in self.replicas:
            if replica.proc is not None:
                replica.query(f"SYSTEM SYNC REPLICA {table}", timeout=120)

    def drop_table(self, table: str) -> None:
        self.replicas[0].query(f"DROP TABLE IF EXISTS {table} ON CLUSTER {self.cluster}", timeout=120)


# ---------------------------------------------------------------- OTLP


@dataclass
class ReceivedRecord:
    """One decoded log record with the resource and scope it came under."""

    resource: dict[str, Any]
    scope: str
    record: Any  # opentelemetry.proto.logs.v1.logs_pb2.LogRecord
    attributes: dict[str, Any]


@dataclass
class Faults:
    """What the receiver does to requests; each request draws once."""

    fail_rate: float = 0.0  # answer 503 or 429 (half each)
    drop_rate: float = 0.0  # close the connection after reading part of the body
    stall_rate: float = 0.0  # wait stall_seconds before answering
    lost_answer_rate: float = 0.0  # take the records, then close the connection without answering
    stall_seconds: float = 5.0
    status: int | None = None  # answer every request with this status (e.g. 400)
    reject: int = 0  # claim this many records of each request rejected (OTLP partial success)
    down: bool = False  # refuse: close at once without reading
    seed: int = 1234
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value (kvlist as dict, array as list, bytes as bytes)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind)


class OTLPReceiver:
    """A loopback OTLP/HTTP logs receiver (``POST /v1/logs``, protobuf, optional gzip).

    Records are decoded with ``opentelemetry-proto`` and kept in ``records``;
    ``faults`` makes it answer 503/429, stall, or drop connections mid-request.
    """

    def __init__(self, faults: Faults | None = None, *, decode: bool = True, port: int = 0) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        self._pb = logs_service_pb2
        self.faults = faults or Faults()
        self.decode = decode
        self.records: list[ReceivedRecord] = []
        self.record_count = 0
        self.requests = 0
        self.accepted = 0
        self.failed = 0
        self.dropped = 0
        self.stalled = 0
        self.lost_answers = 0
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:  # /count: for a receiver in another process
                body = str(receiver.record_count).encode()
                receiver._answer(self, 200, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        faults = self.faults
        with self.lock:
            self.requests += 1
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
            draw = faults.rng.random()
            kind = "ok"
            if faults.down:
                kind = "down"
            elif faults.status is not None:
                kind = "status"
            elif draw < faults.drop_rate:
                kind = "drop"
            elif draw < faults.drop_rate + faults.fail_rate:
                kind = "fail"
            elif draw < faults.drop_rate + faults.fail_rate + faults.stall_rate:
                kind = "stall"
            elif draw < faults.drop_rate + faults.fail_rate + faults.stall_rate + faults.lost_answer_rate:
                kind = "lost"
        if kind == "down":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        length = int(h.headers.get("Content-Length") or 0)
        if kind == "drop":
            h.rfile.read(min(length // 2, length))
            with self.lock:
                self.dropped += 1
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        body = h.rfile.read(length)
        if kind == "stall":
            with self.lock:
                self.stalled += 1
            time.sleep(faults.stall_seconds)
        if kind in ("fail", "status"):
            status = faults.status if kind == "status" else faults.rng.choice((503, 429))
            with self.lock:
                self.failed += 1
            self._answer(h, status, b"try later" if status >= 500 or status == 429 else b"bad request")
            return
        if h.path != "/v1/logs":
            self._answer(h, 404, b"not found")
            return
        if h.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = self._pb.ExportLogsServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:
            self._answer(h, 400, b"cannot decode")
            return
        decoded = []
        count = 0
        for rl in request.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                count += len(sl.log_records)
                if self.decode:
                    for lr in sl.log_records:
                        attrs = {kv.key: any_value(kv.value) for kv in lr.attributes}
                        decoded.append(ReceivedRecord(resource, sl.scope.name, lr, attrs))
        with self.lock:
            self.records.extend(decoded)
            self.record_count += count
            self.accepted += 1
            if kind == "lost":
                self.lost_answers += 1
        if kind == "lost":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        answer = self._pb.ExportLogsServiceResponse()
        if faults.reject:
            answer.partial_success.rejected_log_records = faults.reject
            answer.partial_success.error_message = "too old"
        response = answer.SerializeToString()
        self._answer(h, 200, response, "application/x-protobuf")

    @staticmethod
    def _answer(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "text/plain") -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            if status == 429:
                h.send_header("Retry-After", "0")
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass


def serve_otlp(port: int, ready: Any) -> None:
    """Run a counting (not decoding) receiver on *port* until killed: for a separate process."""
    receiver = OTLPReceiver(decode=False, port=port)
    ready.set()
    receiver.server.serve_forever()
