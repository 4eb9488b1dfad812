"""Fixtures that start real servers on free loopback ports."""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

from gateway.broker import Mosquitto
from gateway.store import Store
from tests.support import CaseSystemProcess


@pytest.fixture
def mosquitto(tmp_path):
    if shutil.which("mosquitto") is None and not __import__("os").path.exists(
            "/usr/sbin/mosquitto"):
        pytest.fail("mosquitto is not installed: run the README's test command "
                    "(it installs the distribution's package)")
    broker = Mosquitto(workdir=tmp_path / "mosquitto").start()
    yield broker
    broker.cleanup()


@pytest.fixture
def store(tmp_path):
    """An empty gateway store (the current schema) in the test's folder."""
    s = Store(tmp_path / "gateway.db")
    s.open()
    yield s
    s.close()


@pytest.fixture
def case_secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def case_system(tmp_path, case_secret):
    cs = CaseSystemProcess(case_secret, tmp_path, dispatch_after=0.5, on_site_after=1.0,
                           close_after=1.5).start()
    yield cs
    cs.stop()


#: Debian's Chromium, driven by Playwright (never a browser download)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed: run `bash deploy/quickstart.sh test` "
                    "(it installs the distribution's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
