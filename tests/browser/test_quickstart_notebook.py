"""notebooks/01_quickstart.ipynb, run cell by cell by JupyterLab in chromium."""

from __future__ import annotations

import pytest
from notebook_ui import NOTEBOOKS, JupyterLab, open_notebook
from playwright.sync_api import Page, expect

NOTEBOOK = "01_quickstart.ipynb"
#: Outputs are on the page once the run is done; this only bounds the wait for the page to show them.
SHOWN_MS = 30_000
#: Text outputs (values and printed lines) the run produces, each in one output.
TEXT_OUTPUTS = [
    "(True, False)",
    "[0, 1, 4, 9, 16, 25, 36, 49]",
    "ExecutionCancelled: the execution ended cancelled",
    "ExecutionTimeout: status 'timeout', error code 'TIMEOUT'",
    "not finished after 0.1 s; the execution goes on",
    "remote type: ZeroDivisionError",
]


@pytest.mark.timeout(600)
def test_quickstart_runs_in_jupyterlab(jupyter_lab: JupyterLab, browser_page: Page) -> None:
    committed = (NOTEBOOKS / NOTEBOOK).read_bytes()
    notebook = open_notebook(browser_page, jupyter_lab, NOTEBOOK)

    notebook.run_all()  # from cleared outputs: everything below is new
    notebook.screenshot()

    outputs = notebook.panel.locator(".jp-OutputArea-output")
    for text in TEXT_OUTPUTS:
        expect(outputs.filter(has_text=text)).to_have_count(1, timeout=SHOWN_MS)
    # Rich outputs: the HTML reprs of DataFrames and of SDK objects.
    expect(outputs.locator("table.dataframe").first).to_contain_text("slow_square", timeout=SHOWN_MS)
    expect(outputs.locator(".spear-repr.spear-stats")).to_contain_text(
        "23 executions: 20 completed, 1 failed, 1 cancelled, 1 timed out", timeout=SHOWN_MS
    )
    expect(outputs.locator(".spear-repr.spear-lab").last).to_contain_text("(stopped)", timeout=SHOWN_MS)
    assert notebook.error_outputs() == []

    # The browser ran a copy: the committed notebook is as it was.
    assert (NOTEBOOKS / NOTEBOOK).read_bytes() == committed
