"""Build janus_utils: the Python package, the cffi-compiled ring and the C log-call encoder."""

from setuptools import Extension, find_packages, setup

# janus-logs serve: Starlette (a small, well-kept ASGI toolkit: routing, static
# files, streaming responses for server-sent events) run by uvicorn, its usual
# server; /metrics needs prometheus-client.
WEB = ["starlette>=0.40", "uvicorn>=0.30", "prometheus-client>=0.20"]
# janus_utils.metrics alone, for an application that serves its own /metrics.
METRICS = ["prometheus-client>=0.20"]

setup(
    name="janus_utils",
    version="0.1.0",
    description="SQLite-first structured logging for Python backends, with a lock-free C ring",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["janus_utils", "janus_utils.*"]),
    package_data={
        "janus_utils": ["py.typed"],
        "janus_utils.integrations": ["uvicorn_log_config.json"],
        "janus_utils.web": ["static/*"],
    },
    setup_requires=["cffi>=1.17"],
    install_requires=["apsw>=3.45", "cffi>=1.17"],
    cffi_modules=["_native/build_ring.py:ffi"],
    # The common log call in C; it reaches the ring through the cffi module.
    ext_modules=[
        Extension(
            "janus_utils._speedups",
            sources=["_native/speedups.c"],
            depends=["_native/ring.h"],
            include_dirs=["_native"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
        ),
        # The rows of a search as Records, their slots filled in C (store.py).
        Extension(
            "janus_utils._records",
            sources=["_native/records.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
        ),
        # janus_seal_rows(), a SQLite loadable extension (never imported by
        # Python): the canonical bytes of sealed rows, read inside SQLite so
        # that verify keeps up with the database (see janus_utils.seal).
        # Optional: without SQLite's and zlib's headers (libsqlite3-dev,
        # zlib1g-dev) it is left out and sealing reads rows in Python.
        Extension(
            "janus_utils._sealrows",
            sources=["_native/sealrows.c"],
            libraries=["z"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        ),
    ],
    extras_require={
        # hypothesis: property tests of sanitize/redaction find inputs no table would.
        # The console's tests drive Debian's chromium through playwright (never
        # its own browser download); the README's test command adds [web].
        # opentelemetry-proto: the shipping tests decode every OTLP request with it.
        # cryptography: the sealing tests (the [seal] extra) sign and verify with it.
        # mypy: README's Python blocks are type-checked against the package's
        # annotations (py.typed), so a documented call a type checker refuses fails.
        "test": [
            "pytest>=8", "pytest-benchmark>=4", "hypothesis>=6", "playwright>=1.40", "httpx>=0.27",
            "opentelemetry-proto>=1.20", "cryptography>=41", "mypy>=1.10",
        ],
        # Shipping to OpenTelemetry: the OTLP message classes, to read a
        # receiver's answers (requests are encoded by janus_utils.ship.otlp).
        "otlp": ["opentelemetry-proto>=1.20"],
        # Shipping to ClickHouse goes over its HTTP interface with the standard
        # library: nothing to install; the extra exists so that the spelling works.
        "clickhouse": [],
        # The frameworks and servers janus_utils.integrations wires, for users and for the
        # tests that start them (httpx drives them; the OpenTelemetry SDK makes the spans
        # whose ids records must carry).  Tested with Flask 3.1, FastAPI 0.165,
        # Starlette 1.10, uvicorn 0.54, gunicorn 27, Django 5.2.  Also janus-logs
        # serve's own server (WEB above).
        "web": [
            "flask>=3",
            "fastapi>=0.110",
            "gunicorn>=22",
            "django>=4.2",
            "httpx>=0.27",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            *WEB,
        ],
        "metrics": METRICS,
        # Sealing (janus_utils.seal): Ed25519 from cryptography, so that the
        # verification key can check the log but not forge it.
        "seal": ["cryptography>=41"],
        # The peers a user would compare against, for bench/ only.
        "bench": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "picologging>=0.9",
            "loguru>=0.7",
            "structlog>=24",
            # structlog's documented fastest setup renders with orjson.
            "orjson>=3",
            # bench_ship.py's OTLP receiver decodes requests with it.
            "opentelemetry-proto>=1.20",
            # bench_seal.py and the sealed end-to-end round.
            "cryptography>=41",
        ],
    },
    entry_points={
        "console_scripts": ["janus-logs = janus_utils.cli:main"],
        # The janus_logs fixture, for every project whose tests run with janus_utils installed.
        "pytest11": [
            "janus_utils.error_handling.tests.plugin = janus_utils.error_handling.tests.plugin"
        ],
    },
    zip_safe=False,
)
