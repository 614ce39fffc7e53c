"""notebooks/02_monitoring.ipynb in JupyterLab in chromium: the live panel renders as a widget and counts
while the workload runs."""

from __future__ import annotations

import re

import pytest
from notebook_ui import JupyterLab, open_notebook
from playwright.sync_api import Page, expect

NOTEBOOK = "02_monitoring.ipynb"
#: The live panel is a widget view (the static snapshot has the same classes, but never changes).
LIVE_PANEL = ".widget-vbox.spear-panel"
#: Bounds the waits for the page: the kernel start, the widget frontend, the workload (a few seconds).
WAIT_MS = 120_000
#: What the notebook's workload ends with: 60 runs of score, 12 of parse completed; 8 of parse failed.
COMPLETED, FAILED = "72", "8"


@pytest.mark.timeout(600)
def test_the_monitoring_panel_counts_while_the_workload_runs(
    jupyter_lab: JupyterLab, browser_page: Page
) -> None:
    notebook = open_notebook(browser_page, jupyter_lab, NOTEBOOK)
    notebook.start_run_all()

    panel = browser_page.locator(LIVE_PANEL).first
    expect(panel).to_be_visible(timeout=WAIT_MS)
    completed = panel.locator(".spear-counter-completed")
    expect(completed).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
    first = completed.inner_text()
    # The panel refreshes twice a second while the work runs: the count moves on from what it showed.
    expect(completed).not_to_have_text(first, timeout=WAIT_MS)
    second = completed.inner_text()
    assert int(second) > int(first)

    notebook.wait_until_run_done()
    expect(completed).to_have_text(COMPLETED, timeout=WAIT_MS)
    expect(panel.locator(".spear-counter-failed")).to_have_text(FAILED, timeout=WAIT_MS)
    expect(panel.locator(".spear-counter-running")).to_have_text("0")
    # lab.stop(): the header says the panel stopped, and no longer vouches for the server's health
    expect(panel.locator(".spear-health")).to_have_text("stopped", timeout=WAIT_MS)
    expect(panel.locator(".spear-panel-header")).not_to_contain_text("healthy")
    expect(browser_page.locator(".widget-vbox.spear-watch")).to_contain_text("5 of 5 finished")
    assert notebook.error_outputs() == []

    panel.scroll_into_view_if_needed()
    notebook.screenshot("monitoring_panel")
