"""JupyterLab in a real browser: the server (:class:`JupyterLab`) and a notebook open in a page
(:class:`NotebookUI`). The fixtures in ``conftest.py`` build these; ``conftest.py`` says how to use them."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, ViewportSize
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
#: Screenshots land here (kept out of git, see .gitignore).
OUTPUT = ROOT / "tests" / "output"

#: The flags a root user on a machine with a closed network needs; Playwright gives every launch a new
#: empty profile (user data dir) of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
#: How long a notebook takes to open and its kernel to start, at most.
OPEN_TIMEOUT_S = 120.0
#: How long "Run All Cells" may take by default (a notebook runs in well under a minute).
RUN_TIMEOUT_S = 180.0
POLL_S = 0.1
#: A menu command's effect shows at once in the page; one that did not within this long was lost.
MENU_EFFECT_S = 10.0
MENU_ATTEMPTS = 3

# JupyterLab settings for the tests: every cell attached to the page (so that every prompt and output can
# be read), and no news or update checks (the machine may have no network, and toasts cover the page).
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}

# Read in the page: the state of the notebook in the visible panel.
_NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(e => e.textContent.trim());
  return {kernel: indicator ? indicator.getAttribute('data-status') : null, prompts};
}"""
_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
_ERROR_OUTPUTS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
_NUMBERED = re.compile(r"^\[\d+\]:$")


class JupyterLab:
    """A JupyterLab server on loopback over a copy of ``notebooks/`` in ``workdir``.

    It has a port chosen by the system, a random token, and config, runtime, data, settings and
    workspace folders of its own, so that nothing of the user's Jupyter set-up is used or changed and
    running the notebooks never touches the committed ones.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "notebooks"
        self.log_path = workdir / "jupyterlab.log"
        self.token = secrets.token_hex(16)
        self.base_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._workspaces = itertools.count(1)

    def url(self, notebook: str) -> str:
        """The address that opens ``notebook`` (a name in ``notebooks/``) in JupyterLab, in a new
        workspace: JupyterLab keeps the tabs of a workspace on the server and would reopen what an
        earlier page had open."""
        workspace = f"test-{next(self._workspaces)}"
        return f"{self.base_url}lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def start(self) -> None:
        shutil.copytree(NOTEBOOKS, self.root, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        dirs = {name: self.workdir / name for name in ("config", "runtime", "data", "settings", "workspaces")}
        for path in dirs.values():
            path.mkdir()
        for name, values in LAB_SETTINGS.items():
            settings = dirs["settings"] / f"{name}.jupyterlab-settings"
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(values), encoding="utf-8")
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "IPYTHONDIR": str(self.workdir / "ipython"),
        }
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        info = self._wait_for_server_info(dirs["runtime"])
        self.base_url = info["url"]
        self._wait_until_answering()

    def _wait_for_server_info(self, runtime: Path) -> dict[str, Any]:
        """The server writes ``jpserver-<pid>.json`` (with the port it got) once it listens."""
        assert self._process is not None
        info_file = runtime / f"jpserver-{self._process.pid}.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                info: dict[str, Any] = json.loads(info_file.read_text(encoding="utf-8"))
                return info
            except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or half written
                time.sleep(POLL_S)
        raise RuntimeError(f"JupyterLab did not start in {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def _wait_until_answering(self) -> None:
        status_url = f"{self.base_url}api/status?token={self.token}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(status_url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not answer in {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(POLL_S)

    def shutdown_kernels(self) -> None:
        """End every session and its kernel (and so what the notebooks started, such as a lab)."""
        for session in self._api("GET", "api/sessions"):
            self._api("DELETE", f"api/sessions/{session['id']}")

    def _api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=STOP_TIMEOUT_S) as response:
            body = response.read()
        return json.loads(body) if body else None

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down (and with them what they started) and exits."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class NotebookUI:
    """One notebook open in JupyterLab in ``page``."""

    page: Page
    name: str
    code_cells: int

    def wait_for_kernel_idle(self, timeout_s: float = OPEN_TIMEOUT_S) -> None:
        """Until the notebook's kernel is started and idle."""
        self.page.wait_for_function(
            f"() => {{ const s = ({_NOTEBOOK_STATE_JS})(); return s !== null && s.kernel === 'idle'; }}",
            timeout=timeout_s * 1000,
        )

    def _menu(self, menu: str, item: str, effect: str) -> None:
        """Click ``menu`` > ``item``, then wait for ``effect`` (a JavaScript function of the notebook's
        state, see ``_NOTEBOOK_STATE_JS``). A command chosen while the page is still setting the notebook
        up can be lost without a trace, so the click is repeated while nothing happens: only commands
        whose effect shows at once (before any kernel round trip) go through here."""
        condition = f"() => {{ const s = ({_NOTEBOOK_STATE_JS})(); return s !== null && ({effect})(s); }}"
        for _ in range(MENU_ATTEMPTS):
            self.page.keyboard.press("Escape")  # no menu left open by an earlier attempt
            self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
            self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()
            try:
                self.page.wait_for_function(condition, timeout=MENU_EFFECT_S * 1000, polling=POLL_S * 1000)
                return
            except PlaywrightTimeoutError:
                continue
        state = self.page.evaluate(_NOTEBOOK_STATE_JS)
        raise AssertionError(f"{self.name}: {menu} > {item} did nothing ({MENU_ATTEMPTS} tries): {state}")

    def clear_outputs(self) -> None:
        """Edit > Clear Outputs of All Cells: outputs go and every prompt reads ``[ ]:``."""
        self._menu(
            "Edit",
            "Clear Outputs of All Cells",
            f"s => s.prompts.length === {self.code_cells} && s.prompts.every(p => p === '[ ]:')",
        )

    def start_run_all(self) -> None:
        """Clear every output, then Run > Run All Cells; return once the cells are queued or running."""
        self.clear_outputs()
        self._menu("Run", "Run All Cells", "s => s.prompts.some(p => p !== '[ ]:')")

    def wait_until_run_done(self, timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Until no cell is queued or running and the kernel is idle; then fail unless every code cell
        ran (JupyterLab stops "Run All" at the first cell that raises), showing the error outputs."""
        settled = f"""() => {{
          const s = ({_NOTEBOOK_STATE_JS})();
          return s !== null && s.kernel === 'idle' && !s.prompts.some(p => p.includes('*'));
        }}"""
        try:
            self.page.wait_for_function(settled, timeout=timeout_s * 1000, polling=POLL_S * 1000)
        except PlaywrightTimeoutError:
            state = self.page.evaluate(_NOTEBOOK_STATE_JS)
            raise AssertionError(
                f"{self.name}: cells still running after {timeout_s:.0f} s: {state}"
            ) from None
        prompts: list[str] = self.page.evaluate(_NOTEBOOK_STATE_JS)["prompts"]
        ran = sum(1 for prompt in prompts if _NUMBERED.match(prompt))
        if ran != self.code_cells:
            errors = "\n\n".join(self.error_outputs())
            raise AssertionError(
                f"{self.name}: {ran} of {self.code_cells} code cells ran (prompts {prompts}); "
                f"error outputs:\n{errors or '(none)'}"
            )

    def run_all(self, timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Clear the outputs, run every cell, and wait until all of them ran (fails otherwise)."""
        self.start_run_all()
        self.wait_until_run_done(timeout_s)

    @property
    def panel(self) -> Locator:
        """The notebook's panel (its toolbar and cells) in the page."""
        return self.page.locator(_PANEL)

    def error_outputs(self) -> list[str]:
        """The text of the notebook's error (and stderr) outputs."""
        return self.panel.locator(_ERROR_OUTPUTS).all_text_contents()

    def screenshot(self, name: str | None = None) -> Path:
        return screenshot(self.page, name or Path(self.name).stem)


def open_notebook(page: Page, lab: JupyterLab, name: str, timeout_s: float = OPEN_TIMEOUT_S) -> NotebookUI:
    """Open ``name`` (from ``notebooks/``) in ``page`` and wait until its kernel is idle."""
    notebook = json.loads((lab.root / name).read_text(encoding="utf-8"))
    code_cells = sum(1 for cell in notebook["cells"] if cell["cell_type"] == "code")
    page.goto(lab.url(name), timeout=timeout_s * 1000)
    ui = NotebookUI(page, name, code_cells)
    ui.wait_for_kernel_idle(timeout_s)
    return ui


def screenshot(page: Page, name: str) -> Path:
    """Save what the page shows as ``tests/output/<name>.png``."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path))
    return path
