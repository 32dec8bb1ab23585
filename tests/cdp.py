"""A tiny Chrome DevTools Protocol client over `--remote-debugging-pipe` (no websocket library):
headless Chromium opens a page, the test waits for elements, clicks, reads the DOM and takes
screenshots the way a user's browser renders them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


class Browser:
    """Headless Chromium driven through CDP on file descriptors 3 (commands) and 4 (replies)."""

    def __init__(self, profile: Path, width: int = 1600, height: int = 1000) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its replies
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4), start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, page=True)

    def call(self, method: str, params: dict[str, Any] | None = None, *, page: bool = False,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send one CDP command (to the page session when `page`) and return its result."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raise TimeoutError(method)

    def goto(self, url: str) -> None:
        self.call("Page.enable", page=True)
        self.call("Page.navigate", {"url": url}, page=True)

    def js(self, expression: str) -> Any:
        """Evaluate `expression` in the page and return its (JSON) value."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, page=True)
        if "exceptionDetails" in out:
            raise RuntimeError(out["exceptionDetails"].get("text", "script error"))
        return out.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 90.0) -> Any:
        """Poll `expression` until it is truthy; returns its value (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError:  # e.g. the page is still loading: no document.body yet
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"waiting for {expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, page=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        os.close(self._to_child)
        os.close(self._from_child)
