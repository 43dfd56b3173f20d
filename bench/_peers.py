"""Every logger the benchmarks compare, set up the way its own docs suggest, behind one shape.

A peer is opened on a directory, logs with ``burst(ids)`` (one call per id, the
library's own call syntax, the method bound once outside the loop, as a hot
loop would), makes what it holds durable-ish with ``drain()`` (file written,
queue emptied, rows committed) and is closed with ``close()``.  ``below(ids)``
is the same call one level below the logger's level.

All log the same record: INFO, ``"user %s logged in"`` and the fields
user_id, ip and agent_id, plus a timestamp, the level and the logger name.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import marshal
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _sizes
from ._sizes import AGENT, IP, MESSAGE

__all__ = ["PEERS", "Peer", "ThreadedBurst", "peer"]

LOGGER = "svc.auth"
# What a stdlib user writes to get the fields into the file.
STDLIB_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s %(message)s "
    "user_id=%(user_id)s ip=%(ip)s agent_id=%(agent_id)s"
)
LOGURU_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSSSSZ} {level} {name} {message} {extra}"

Burst = Callable[[Sequence[str]], None]


class Peer:
    """One logger under test; subclasses fill in ``open``."""

    key = ""  # pytest id and JSON key
    label = ""  # what the table calls it
    has_below = False

    def __init__(self) -> None:
        self.burst: Burst = _unopened
        self.below: Burst = _unopened

    def open(self, directory: Path) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        """Make everything logged so far written (file), committed (db) or dequeued."""

    def close(self) -> None:
        """Undo open(): handlers removed, files and threads closed."""


def _unopened(ids: Sequence[str]) -> None:
    raise RuntimeError("open() the peer first")


# ---------------------------------------------------------------- janus_utils


class Janus(Peer):
    key = "janus"
    label = "janus_utils"
    has_below = True

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = {"ring_size": _sizes.PRODUCER_RING, **options}

    def open(self, directory: Path) -> None:
        import janus_utils as ju

        self.path = directory / "janus.db"
        ju.configure(self.path, console=False, level="INFO", **self.options)
        log = ju.get_logger(LOGGER)
        info, debug = _slow_down_janus(log.info, _sizes.SLOWDOWN), log.debug

        def burst(ids: Sequence[str]) -> None:
            for uid in ids:
                info(MESSAGE, uid, user_id=uid, ip=IP, agent_id=AGENT)

        def below(ids: Sequence[str]) -> None:
            for uid in ids:
                debug(MESSAGE, uid, user_id=uid, ip=IP, agent_id=AGENT)

        self.burst, self.below = burst, below

    def drain(self) -> None:
        import janus_utils as ju

        if not ju.flush(timeout=600):
            raise RuntimeError(f"janus flush did not finish: {ju.stats()}")

    def close(self) -> None:
        import janus_utils as ju

        ju.shutdown()


def _slow_down_janus(info: Callable[..., None], extra: int) -> Callable[..., None]:
    """A deliberately slower log call for the regression gate: *extra* more encodings per call.

    The call itself is janus's (its level methods are C); the wrapper adds
    a Python frame and the encodings, and nothing in janus_utils/ changes.
    """
    if extra <= 0:
        return info

    def slower_info(msg: str, *args: Any, **fields: Any) -> None:
        for _ in range(extra):
            marshal.dumps((1, 20, LOGGER, msg, args, fields), 2)
        info(msg, *args, **fields)

    return slower_info


# ---------------------------------------------------------------- stdlib logging


def _stdlib_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.disabled = False
    return logger


def _stdlib_bursts(logger: logging.Logger) -> tuple[Burst, Burst]:
    info, debug = logger.info, logger.debug

    def burst(ids: Sequence[str]) -> None:
        for uid in ids:
            info(MESSAGE, uid, extra={"user_id": uid, "ip": IP, "agent_id": AGENT})

    def below(ids: Sequence[str]) -> None:
        for uid in ids:
            debug(MESSAGE, uid, extra={"user_id": uid, "ip": IP, "agent_id": AGENT})

    return burst, below


class StdlibFile(Peer):
    key = "stdlib_file"
    label = "stdlib logging → FileHandler"
    has_below = True

    def open(self, directory: Path) -> None:
        self.handler = logging.FileHandler(directory / "stdlib.log", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(STDLIB_FORMAT))
        self.logger = _stdlib_logger(self.handler)
        self.burst, self.below = _stdlib_bursts(self.logger)

    def drain(self) -> None:
        self.handler.flush()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


class StdlibQueue(Peer):
    key = "stdlib_queue"
    label = "stdlib QueueHandler → QueueListener → FileHandler"

    def open(self, directory: Path) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()  # unbounded, as the docs show it
        self.file = logging.FileHandler(directory / "stdlib-queue.log", encoding="utf-8")
        self.file.setFormatter(logging.Formatter(STDLIB_FORMAT))
        self.handler = logging.handlers.QueueHandler(self.queue)
        self.listener = logging.handlers.QueueListener(self.queue, self.file)
        self.listener.start()
        self.logger = _stdlib_logger(self.handler)
        self.burst, self.below = _stdlib_bursts(self.logger)

    def drain(self) -> None:
        self.queue.join()  # QueueListener calls task_done() per record
        self.file.flush()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.listener.stop()
        self.file.close()


class Picologging(Peer):
    key = "picologging"
    label = "picologging → FileHandler"
    has_below = True

    def open(self, directory: Path) -> None:
        import picologging

        self.handler = picologging.FileHandler(str(directory / "pico.log"), encoding="utf-8")
        # picologging's LogRecord takes no extra= attributes, so the fields
        # travel as format arguments: the same text ends up in the file.
        self.handler.setFormatter(picologging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.logger = picologging.getLogger(LOGGER)
        for old in list(self.logger.handlers):
            self.logger.removeHandler(old)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(picologging.INFO)
        self.logger.propagate = False
        info, debug = self.logger.info, self.logger.debug
        msg = MESSAGE + " user_id=%s ip=%s agent_id=%s"

        def burst(ids: Sequence[str]) -> None:
            for uid in ids:
                info(msg, uid, uid, IP, AGENT)

        def below(ids: Sequence[str]) -> None:
            for uid in ids:
                debug(msg, uid, uid, IP, AGENT)

        self.burst, self.below = burst, below

    def drain(self) -> None:
        self.handler.flush()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


# ---------------------------------------------------------------- loguru, structlog


class Loguru(Peer):
    def __init__(self, enqueue: bool) -> None:
        super().__init__()
        self.enqueue = enqueue
        self.key = "loguru_enqueue" if enqueue else "loguru"
        self.label = "loguru → file, enqueue=True" if enqueue else "loguru → file"

    def open(self, directory: Path) -> None:
        from loguru import logger

        self.logger = logger
        logger.remove()  # the default stderr sink too: only the file is measured
        self.sink_id = logger.add(
            str(directory / f"{self.key}.log"), format=LOGURU_FORMAT, level="INFO", enqueue=self.enqueue
        )
        info = logger.info
        msg = MESSAGE.replace("%s", "{}")  # loguru formats with str.format

        def burst(ids: Sequence[str]) -> None:
            for uid in ids:
                info(msg, uid, user_id=uid, ip=IP, agent_id=AGENT)

        self.burst = burst

    def drain(self) -> None:
        self.logger.complete()  # waits for the enqueued messages to be written

    def close(self) -> None:
        self.logger.remove(self.sink_id)


def _json_serializer() -> tuple[Callable[..., Any], bool]:
    """orjson, as structlog's performance docs recommend, when installed; else stdlib json."""
    try:
        import orjson
    except ImportError:
        return json.dumps, False
    return orjson.dumps, True


class Structlog(Peer):
    key = "structlog"
    label = "structlog → JSON file"

    def open(self, directory: Path) -> None:
        import structlog

        serializer, as_bytes = _json_serializer()
        path = directory / "structlog.jsonl"
        self.file: Any = open(path, "wb") if as_bytes else open(path, "w", encoding="utf-8")  # noqa: SIM115
        factory = structlog.BytesLoggerFactory(self.file) if as_bytes else structlog.WriteLoggerFactory(self.file)
        # structlog's documented fastest setup: filtering bound logger, cached
        # on first use, processors ending in JSONRenderer, bytes out.
        structlog.configure(
            cache_logger_on_first_use=True,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.format_exc_info,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=serializer),
            ],
            logger_factory=factory,
        )
        info = structlog.get_logger().bind(logger=LOGGER).info

        def burst(ids: Sequence[str]) -> None:
            for uid in ids:
                info(MESSAGE, uid, user_id=uid, ip=IP, agent_id=AGENT)

        self.burst = burst

    def drain(self) -> None:
        self.file.flush()

    def close(self) -> None:
        import structlog

        structlog.reset_defaults()
        self.file.close()


# ---------------------------------------------------------------- SQLite handlers people write

PLAIN_TABLE = (
    'CREATE TABLE IF NOT EXISTS "logs" ("id" INTEGER PRIMARY KEY, "ts" REAL, '
    '"level" INTEGER, "logger" TEXT, "message" TEXT, "fields" TEXT)'
)
PLAIN_INSERT = 'INSERT INTO "logs" ("ts", "level", "logger", "message", "fields") VALUES (?, ?, ?, ?, ?)'
_STD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def plain_row(record: logging.LogRecord) -> tuple[Any, ...]:
    """A log record as a row of the plain table; extra= keys become the JSON fields."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}
    return (
        record.created,
        record.levelno,
        record.name,
        record.getMessage(),
        json.dumps(fields, default=str) if fields else None,
    )


def connect_plain(path: Path | str, *, autocommit: bool) -> sqlite3.Connection:
    """sqlite3 in WAL with synchronous=NORMAL: the durability janus_utils has."""
    db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None if autocommit else "")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(PLAIN_TABLE)
    db.commit()
    return db


class NaiveSQLiteHandler(logging.Handler):
    """The handler found in blog posts: one INSERT per record, committed at once."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.db = connect_plain(path, autocommit=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.db.execute(PLAIN_INSERT, plain_row(record))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.db.close()
        super().close()


class BatchSQLiteHandler(logging.Handler):
    """The best of the public recipes: buffer rows, executemany them in one transaction."""

    def __init__(self, path: Path | str, capacity: int = 1000) -> None:
        super().__init__()
        self.db = connect_plain(path, autocommit=False)
        self.capacity = capacity
        self.buffer: list[tuple[Any, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.append(plain_row(record))
            if len(self.buffer) >= self.capacity:
                self.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            if self.buffer:
                rows, self.buffer = self.buffer, []
                with self.db:  # one transaction
                    self.db.executemany(PLAIN_INSERT, rows)
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        self.db.close()
        super().close()


class _SQLitePeer(Peer):
    handler_class: type[logging.Handler] = NaiveSQLiteHandler

    def open(self, directory: Path) -> None:
        self.handler = self.handler_class(directory / f"{self.key}.db")  # type: ignore[call-arg]
        self.logger = _stdlib_logger(self.handler)
        self.burst, self.below = _stdlib_bursts(self.logger)

    def drain(self) -> None:
        self.handler.flush()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


class NaiveSQLite(_SQLitePeer):
    key = "sqlite_naive"
    label = "stdlib → SQLite handler, one commit per record"
    handler_class = NaiveSQLiteHandler


class BatchSQLite(_SQLitePeer):
    key = "sqlite_batch"
    label = "stdlib → SQLite handler, executemany per 1,000"
    handler_class = BatchSQLiteHandler


# ---------------------------------------------------------------- registry

PEERS: dict[str, Callable[[], Peer]] = {
    "janus": Janus,
    "stdlib_file": StdlibFile,
    "stdlib_queue": StdlibQueue,
    "picologging": Picologging,
    "loguru": lambda: Loguru(enqueue=False),
    "loguru_enqueue": lambda: Loguru(enqueue=True),
    "structlog": Structlog,
    "sqlite_naive": NaiveSQLite,
    "sqlite_batch": BatchSQLite,
}
LABELS = {key: make().label for key, make in PEERS.items()}


def peer(key: str) -> Peer:
    return PEERS[key]()


# ---------------------------------------------------------------- threads


class ThreadedBurst:
    """Threads started and parked on a barrier; ``go()`` releases them and waits for all.

    Built in a benchmark's setup so that thread start-up is not timed: the
    timed part is from the release to the last thread's end.
    """

    def __init__(self, burst: Burst, id_lists: Sequence[Sequence[str]]) -> None:
        self.barrier = threading.Barrier(len(id_lists) + 1)
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(burst, ids), name=f"bench-{n}", daemon=True)
            for n, ids in enumerate(id_lists)
        ]
        for thread in self.threads:
            thread.start()
        while self.barrier.n_waiting < len(self.threads):
            time.sleep(0.0005)

    def _run(self, burst: Burst, ids: Sequence[str]) -> None:
        try:
            self.barrier.wait()
            burst(ids)
        except BaseException as err:  # re-raised by go() in the benchmark's thread
            self.errors.append(err)

    def go(self) -> None:
        self.barrier.wait()
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
