"""The README's framework snippets run as shown: each python block of "Web frameworks and servers", in a subprocess;
and every python block type-checks against the package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import janus_utils as ju

README = Path(__file__).resolve().parent.parent / "README.md"


def sections() -> dict[str, list[str]]:
    """{subsection title: its python blocks} of the README's "Web frameworks and servers"."""
    text = README.read_text()
    part = text.split("## Web frameworks and servers", 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[str]] = {}
    for chunk in re.split(r"^### ", part, flags=re.M)[1:]:
        title, body = chunk.split("\n", 1)
        found[title.strip()] = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    return found


# What each section's snippet is then asked to do, appended after it, in the same process.
DRIVERS = {
    "Flask": """
        client = app.test_client()
        response = client.get("/orders/7", headers={"X-User": "42"})
        response.close()
        assert response.status_code == 200 and response.headers["X-Request-ID"]
        response = client.get("/nope")
        response.close()
        assert response.status_code == 404 and response.headers["Content-Type"] == "application/problem+json"
        ju.flush()
        with ju.LogStore("shop-logs.db") as store:
            assert store.count(logger="shop", user_id="42") == 1
            assert store.count(fields={"error_id": response.get_json()["error_id"]}) == 1
            assert store.count(logger="janus.access") == 2
    """,
    "FastAPI and Starlette": """
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient
        with TestClient(app) as client:
            assert client.get("/items/3").status_code == 200
            missing = client.get("/items/0")
            invalid = client.get("/items/x")
        assert (missing.status_code, invalid.status_code) == (404, 422)
        ju.flush()
        with ju.LogStore("api-logs.db") as store:
            for response in (missing, invalid):
                assert store.count(fields={"error_id": response.json()["error_id"]}) == 1
            assert store.count(logger="janus.access") == 3
    """,
    "Django": """
        assert MIDDLEWARE and LOGGING["handlers"]["janus"]["db_path"] == "site-logs.db"
        for name in (handler400, handler403, handler404, handler500):
            module, _, attr = name.rpartition(".")
            import importlib
            assert callable(getattr(importlib.import_module(module), attr))
    """,
    "dictConfig alone": """
        import janus_utils as ju
        ju.flush()
        with ju.LogStore("app-logs.db") as store:
            (record,) = store.search()
        assert (record.message, record.user_id) == ("stored", "42")
    """,
}


def test_every_framework_section_has_a_check() -> None:
    """Each python block of the section is run below; a new section needs its driver."""
    found = {title for title, blocks in sections().items() if blocks}
    assert set(DRIVERS) == found


@pytest.mark.parametrize("title", sorted(DRIVERS))
def test_snippet_runs(title: str, tmp_path: Path) -> None:
    """The section's python blocks, run as shown in a fresh interpreter, then checked."""
    blocks = sections()[title]
    if title == "Flask":
        pytest.importorskip("flask")
    if title == "FastAPI and Starlette":
        pytest.importorskip("fastapi")
        pytest.importorskip("httpx")
    if title == "Django":
        pytest.importorskip("django")
    code = "\n".join(blocks) + "\n" + textwrap.dedent(DRIVERS[title])
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert 0 == result.returncode, result.stderr[-3000:]


def test_server_commands_name_shipped_recipes() -> None:
    """The gunicorn and uvicorn commands refer to the config module and file the package ships."""
    text = README.read_text().split("### gunicorn and uvicorn", 1)[1].split("###", 1)[0]
    assert "-c python:janus_utils.integrations.gunicorn_conf" in text
    from janus_utils.integrations import UVICORN_LOG_CONFIG, gunicorn_conf

    assert Path(UVICORN_LOG_CONFIG).is_file()
    assert "gunicorn.access" in gunicorn_conf.logconfig_dict["loggers"]
    assert ju.JanusHandler is not None


def test_python_blocks_type_check(tmp_path: Path) -> None:
    """mypy finds no wrong call in any python block (store.count(user_id=42) included)."""
    api = pytest.importorskip("mypy.api")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    files = []
    for number, block in enumerate(blocks):
        path = tmp_path / f"readme_block_{number:02d}.py"
        # Blocks go on from earlier ones: each gets the import the README made before.
        path.write_text(("" if "import janus_utils as ju" in block else "import janus_utils as ju\n") + block)
        files.append(str(path))
    # The package from this checkout, whichever way it is installed (an
    # editable install's import hook is invisible to mypy).
    os.environ["MYPYPATH"] = str(README.parent)
    try:
        out, err, status = api.run([
            "--follow-imports=silent",
            "--cache-dir", str(tmp_path / "cache"),
            # Fragments: the application's own names (app, order, charge...) are not defined.
            "--disable-error-code", "name-defined",
            "--disable-error-code", "has-type",
            *files,
        ])
    finally:
        del os.environ["MYPYPATH"]
    assert 0 == status, out + err
