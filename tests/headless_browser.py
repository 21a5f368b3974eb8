"""Headless Chromium for tests, driven over the DevTools protocol with aiohttp's websocket client
(aiohttp comes with MLflow, so nothing is added for it).

`Browser.visit(url, ready)` opens `url` in a new tab and waits until the JavaScript expression
`ready` is truthy in the page or in any of its frames, iframes from other origins included (the
MLflow UI shows an HTML artifact in a sandboxed iframe, a separate process for Chromium). It returns
that value and a PNG screenshot of the tab. Chromium's own `--screenshot` flag is no use here: it
shoots when the page has loaded, before the UI has fetched and drawn anything, and its
`--virtual-time-budget` never lets such an iframe finish.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Browser", "Visit", "find_chromium", "png_spread"]

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH ($NCSEARCH_CHROMIUM first), or None."""
    wanted = os.environ.get("NCSEARCH_CHROMIUM")
    if wanted:
        return shutil.which(wanted)
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Visit:
    value: Any  # what `ready` gave in the first frame where it was truthy
    screenshot: bytes  # PNG of the tab
    seconds: float


class Browser:
    """One headless Chromium process (own profile, own process group) until `close`."""

    def __init__(self, exe: str, profile: Path, *, width: int = 1400, height: int = 1000, log: Path | None = None):
        profile.mkdir(parents=True, exist_ok=True)
        self._log = open(log or profile / "chromium.log", "w")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start (exit {self.proc.returncode}); see {self._log.name}")
            time.sleep(0.2)
        self.endpoint = f"http://127.0.0.1:{int(port_file.read_text().split()[0])}"

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def visit(self, url: str, ready: str, *, timeout: float = 120) -> Visit:
        """Open `url` in a new tab; wait (up to `timeout` s) until `ready` is truthy in one of its frames."""
        request = urllib.request.Request(f"{self.endpoint}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.load(response)
        try:
            return asyncio.run(_visit(target["webSocketDebuggerUrl"], url, ready, timeout))
        finally:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.endpoint}/json/close/{target['id']}", timeout=30).close()


class _Session:
    """Commands and events on one DevTools websocket, with flattened sessions for child targets."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.contexts: dict[tuple[str | None, int], str] = {}  # (session, context id) -> origin

    async def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, timeout=60)

    async def read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"{data['error'].get('message')}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, params, session = data.get("method"), data.get("params", {}), data.get("sessionId")
            if method == "Target.attachedToTarget":  # an out-of-process iframe
                child = params["sessionId"]
                asyncio.ensure_future(self._watch(child))
            elif method == "Runtime.executionContextCreated":
                context = params["context"]
                self.contexts[(session, context["id"])] = context.get("origin", "")
            elif method == "Runtime.executionContextDestroyed":
                self.contexts.pop((session, params.get("executionContextId")), None)
            elif method == "Runtime.executionContextsCleared":
                for key in [k for k in self.contexts if k[0] == session]:
                    self.contexts.pop(key)

    async def _watch(self, session: str | None) -> None:
        with contextlib.suppress(Exception):
            await self.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True},
                            session=session)
            await self.call("Runtime.enable", session=session)


async def _visit(ws_url: str, url: str, ready: str, timeout: float) -> Visit:
    import aiohttp

    start = time.monotonic()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        session = _Session(ws)
        reader = asyncio.ensure_future(session.read())
        try:
            await session.call("Page.enable")
            await session._watch(None)
            await session.call("Page.navigate", {"url": url})
            value = None
            while time.monotonic() - start < timeout:
                for (child, context) in list(session.contexts):
                    with contextlib.suppress(Exception):
                        result = await session.call(
                            "Runtime.evaluate", {"expression": ready, "contextId": context, "returnByValue": True}, session=child)
                        value = result.get("result", {}).get("value")
                        if value:
                            break
                if value:
                    break
                await asyncio.sleep(0.5)
            else:
                raise TimeoutError(f"{url}: {ready!r} never became true in {timeout:.0f}s")
            await asyncio.sleep(1.0)  # let the last frame paint
            shot = await session.call("Page.captureScreenshot", {"format": "png"})
            return Visit(value, base64.b64decode(shot["data"]), time.monotonic() - start)
        finally:
            reader.cancel()


def png_spread(png: bytes, box: tuple[int, int, int, int] | None = None) -> tuple[float, int]:
    """(standard deviation of the grey levels, number of distinct colours) of a PNG, or of `box`
    (left, top, right, bottom) in it: near 0 and 1 for a blank image."""
    import io

    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if box is not None:
        image = image.crop(box)
    grey = ImageStat.Stat(image.convert("L"))
    return float(grey.stddev[0]), len(image.getcolors(maxcolors=1 << 20) or [])
