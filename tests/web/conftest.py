"""Browser tests of the editor: one real server (tiny SD1 checkpoint, a pack with ComfyUI-style JS) for the session,
Debian's chromium driven by Playwright (never a downloaded browser), a fresh page per test, and screenshots of each
step under tests/web/artifacts/."""
import os
import re

import pytest

from tests.server_harness import ServerProcess
from tests.web.helpers import ARTIFACTS, launch_chromium

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture(scope="session")
def web_server(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("web")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.checkpoint("sd1"), checkpoints / CHECKPOINT)
    # listed like any checkpoint, fails when loaded: the execution-error test uses it
    (checkpoints / "broken.safetensors").write_bytes(b"this is not a safetensors file")
    server = ServerProcess(base, packs=("web_compat_pack",)).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def browser():
    # package scope: Playwright's sync API keeps an event loop running while it is open, so it must close when the
    # browser tests end, before later tests (in any order pytest is given them) call asyncio.run
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, page, test_name):
        self.page = page
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.count = 0
        os.makedirs(ARTIFACTS, exist_ok=True)

    def __call__(self, step):
        self.count += 1
        path = os.path.join(ARTIFACTS, f"{self.prefix}-{self.count:02d}-{step}.png")
        self.page.screenshot(path=path)
        return path


@pytest.fixture
def page(browser, web_server, request):
    """A fresh browser context on the editor, waited until `document.body.dataset.ready == "1"`.
    `page.problems` collects console errors and uncaught page errors."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    tab = context.new_page()
    tab.problems = []
    tab.on("pageerror", lambda error: tab.problems.append(f"pageerror: {error}"))
    tab.on("console", lambda msg: tab.problems.append(f"console.{msg.type}: {msg.text}")
           if msg.type == "error" else None)
    tab.shot = Shots(tab, request.node.name)
    tab.server = web_server
    tab.goto(web_server.url + "/")
    tab.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
    # the running panel and packs' extensions install right after the core is ready
    tab.wait_for_selector("#queue-button", timeout=10000)
    tab.wait_for_function("document.body.dataset.extensions === 'loaded'", timeout=15000)
    if request.node.get_closest_marker("first_visit") is None:
        # a first visit opens the txt2img example; most tests build their graph from an empty canvas
        tab.evaluate("() => window.tessera.newWorkflow()")
    yield tab
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        tab.shot("failure")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
