"""Headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

A real browser is the point: its own ``EventSource`` (reconnection,
``Last-Event-ID``), ``fetch``, Content-Security-Policy enforcement and
rendering.  The protocol is a websocket to the page (``websocket-client``);
nothing is downloaded: the binary is the system's Chromium (Debian's
``chromium``), or ``$SSE_FAST_CHROMIUM``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def find_chromium() -> str | None:
    """``$SSE_FAST_CHROMIUM``, else a Chromium or Chrome on ``PATH``."""
    explicit = os.environ.get("SSE_FAST_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """The Chromium to drive: a test without one skips, or fails under CI (where it must run)."""
    import pytest

    binary = find_chromium()
    if binary is None:
        message = "no Chromium found (apt-get install chromium, or set SSE_FAST_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {message}")
        pytest.skip(message)
    return binary


class BrowserError(AssertionError):
    """The page threw, or the protocol answered with an error."""


class Chromium:
    """One headless browser with one page; ``evaluate`` runs JavaScript in it."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        width: int = 1280,
        height: int = 900,
        flags: tuple[str, ...] = (),
    ) -> None:
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "chromium.log"
        self.width, self.height = width, height
        argv = [
            binary,
            *LAUNCH_FLAGS,
            *flags,
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.exceptions: list[str] = []
        self.console: list[str] = []
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port(timeout=60.0)
            page = self._first_page(port, timeout=30.0)
            self.ws = websocket.create_connection(page, timeout=30, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------- launch

    def _devtools_port(self, timeout: float) -> int:
        """Chromium writes the port it chose to ``DevToolsActivePort`` in its profile."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s:\n{self.output()}")

    @staticmethod
    def _first_page(port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                    targets = json.load(answer)
                for target in targets:
                    if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                        return str(target["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise RuntimeError(f"chromium offered no page target within {timeout} s")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    # ------------------------------------------------------------- protocol

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are recorded."""
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._record(message)

    def _record(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", {}).get("description") or details))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"{entry.get('source')}/{entry.get('level')}: {entry.get('text')}")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises are awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", details)
            raise BrowserError(f"{expression!r} threw: {thrown}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy and return it; fail the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"not true within {timeout} s: {expression} (last value {value!r})")

    def open(self, url: str, timeout: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(
            f"location.href.startsWith({json.dumps(url)}) && document.readyState === 'complete'", timeout
        )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (the viewport stretched to the document's height)."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or self.height)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=max(height, 200),
            deviceScaleFactor=1,
            mobile=False,
        )
        try:
            data = self.call("Page.captureScreenshot", format="png")["data"]
        finally:
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)
