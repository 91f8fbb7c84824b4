"""Browser tests: the app under uvicorn on a free localhost port (SQLite), driven by Debian's
Chromium through Playwright. Without /usr/bin/chromium they skip with one line, except under
CI=true, where that is a failure."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.conftest import Database, Trial, build_trial, flagship
from trialdesk.bootstrap import create_app
from trialdesk.store.database import make_engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screens"
GUIDE_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
"""Screenshots the user guide shows, under stable names (docs/user-guide.md links them)."""
START_UP_LIMIT_S = 20.0


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " - required under CI=true")
    pytest.skip(message)


@pytest.fixture
def web_trial(tmp_path: Path) -> Iterator[Trial]:
    """The demo flagship study on SQLite."""
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    engine = make_engine(url)
    built = build_trial(Database("sqlite", url, engine), tmp_path, flagship())
    yield built
    built.runtime.close()
    engine.dispose()


@pytest.fixture
def server(web_trial: Trial) -> Iterator[str]:
    """Serve create_app(runtime) on a port the OS picked; the base URL once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(web_trial.runtime), log_level="warning", lifespan="off", access_log=False
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_UP_LIMIT_S
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.05)  # poll: returns as soon as the server thread ends, too
    if not srv.started:
        srv.should_exit = True
        pytest.fail(f"the web server did not start within {START_UP_LIMIT_S:.0f} s")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(START_UP_LIMIT_S)
    sock.close()


@pytest.fixture
def browser() -> Iterator[object]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    SCREENS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def guide_shot(page: object, name: str) -> Path:
    """Save the page as ``docs/img/<name>.png`` for the user guide (stable names, rewritten on
    each run), and a copy under test-artifacts/screens/ for the test run's record."""
    GUIDE_IMAGES.mkdir(parents=True, exist_ok=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = GUIDE_IMAGES / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    (SCREENS / f"guide-{name}.png").write_bytes(path.read_bytes())
    return path
