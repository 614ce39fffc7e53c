"""Notebooks in a real browser: JupyterLab on loopback, driven by Playwright in Debian's chromium.

Fixtures
--------
``jupyter_lab``
    A :class:`notebook_ui.JupyterLab` server, started once per session (``jupyter_lab_server``) and stopped
    at the end: loopback, a port the system picks, a random token, its own config/runtime/data/settings/
    workspace folders, and as its root a copy of ``notebooks/`` in a temporary folder (running notebooks in
    the browser never changes the committed ones). After each test the kernels it started are shut down,
    so a notebook always opens with a fresh kernel. ``jupyter_lab.url("01_quickstart.ipynb")`` opens a
    notebook (each time in a new JupyterLab workspace, so that no tab of an earlier test reopens); ``.root``
    is the copy; ``.log_tail()`` the server's last log lines.
``chromium_executable`` (session)
    The chromium the tests drive: ``SPEAR_TEST_CHROMIUM`` if set, else ``chromium`` on ``PATH`` or
    ``/usr/bin/chromium`` (the first that answers ``--version``; see ``chromium.py``). Where there is none
    the browser tests are skipped, with a reason that says how to get it (``apt-get install chromium``);
    with ``CI`` set (or ``SPEAR_REQUIRE_BROWSER=1``) they fail instead. JupyterLab is only started once a
    chromium was found.
``chromium`` (function)
    A Playwright ``Browser``: that chromium started headless with the flags in
    ``notebook_ui.CHROMIUM_ARGS``, for one test (about a second); no browser is downloaded.
``browser_page`` (function)
    A new ``Page`` in a context of its own (1400x1000), closed after the test. When a test fails, what the
    page showed is saved as ``tests/output/<test name>-failed.png``.

Helpers (``from notebook_ui import open_notebook``)
---------------------------------------------------
``open_notebook(browser_page, jupyter_lab, "02_monitoring.ipynb")`` opens a notebook, waits until its
kernel is idle and returns a :class:`notebook_ui.NotebookUI`:

- ``.run_all()``: clears every output, runs Run > Run All Cells and waits until every code cell ran and the
  kernel is idle; fails (with the error outputs) when a cell raised and stopped the run.
- ``.start_run_all()`` then ``.wait_until_run_done()``: the same in two steps, to watch the page while the
  cells run (for instance a live panel's counters).
- ``.screenshot(name)``: saves ``tests/output/<name>.png``; ``.error_outputs()``; ``.page``; ``.panel`` (a
  ``Locator`` of the notebook's panel, to look for outputs in).

A test::

    from notebook_ui import open_notebook
    from playwright.sync_api import expect

    def test_monitoring(jupyter_lab, browser_page):
        notebook = open_notebook(browser_page, jupyter_lab, "02_monitoring.ipynb")
        notebook.start_run_all()
        expect(browser_page.locator(".spear-panel").first).to_be_visible(timeout=60_000)
        notebook.wait_until_run_done()
        notebook.screenshot()

"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from chromium import browser_required, candidates, find_chromium, missing_reason
from notebook_ui import CHROMIUM_ARGS, VIEWPORT, JupyterLab, screenshot
from playwright.sync_api import Browser, Page, sync_playwright


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    looked_at = candidates()
    found = find_chromium(looked_at)
    if found is None:
        reason = missing_reason(looked_at)
        if browser_required():
            pytest.fail(
                f"{reason} (CI or SPEAR_REQUIRE_BROWSER=1 is set: the browser tests must run)", pytrace=False
            )
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def jupyter_lab_server(
    chromium_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    lab = JupyterLab(tmp_path_factory.mktemp("jupyterlab"))
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def jupyter_lab(jupyter_lab_server: JupyterLab) -> Iterator[JupyterLab]:
    """The session's server; the kernels a test started are shut down after it."""
    try:
        yield jupyter_lab_server
    finally:
        jupyter_lab_server.shutdown_kernels()


@pytest.fixture
def chromium(chromium_executable: str) -> Iterator[Browser]:
    # Per test, not per session: while Playwright's sync API is open it keeps an event loop running on
    # this thread, and the asyncio tests that run after the browser tests could not run theirs.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep what the page showed when a browser test fails."""
    report = yield
    page = getattr(item, "funcargs", {}).get("browser_page")
    if report.when == "call" and report.failed and page is not None and not page.is_closed():
        try:
            path = screenshot(page, f"{item.name}-failed")
        except Exception as exc:  # the report must survive a page that cannot be captured
            report.sections.append(("screenshot", f"no screenshot: {exc}"))
        else:
            report.sections.append(("screenshot", str(path)))
    return report
