"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

The page must render with no console errors or exceptions, show its plots and tables, fetch
nothing, and show stored traffic as text — a prompt carrying <script> must not run.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from shadowtap.config import GatesConfig
from shadowtap.report import build_report, open_db, write_html

from tests.report_data import NOISE, PARAPHRASE, SLOW, make_exchanges, write

pytestmark = pytest.mark.slow

HOSTILE = (
    "Question {i}: <script>window.pwned = {i}</script>"
    "<img src=x onerror=\"window.pwned = 'img'\"> </td></tr></table> & ünïcode"
)
FACTS_JS = """JSON.stringify({
  svgs: document.querySelectorAll('svg').length,
  bars: document.querySelectorAll('svg rect').length,
  tables: document.querySelectorAll('table').length,
  exampleRows: document.querySelectorAll('table.examples tbody tr').length,
  diffRows: document.querySelectorAll('table.diff tbody tr').length,
  marks: Array.from(document.querySelectorAll('table.diff mark')).map(e => e.className),
  badges: Array.from(document.querySelectorAll('.card .verdict')).map(e => e.textContent),
  pwned: window.pwned === undefined ? null : String(window.pwned),
  images: document.images.length,
  scripts: document.scripts.length,
  text: document.body.innerText,
  width: document.documentElement.scrollWidth,
})"""


@dataclass
class Page:
    """One Chromium tab over the DevTools protocol, recording every error it reports."""

    ws: aiohttp.ClientWebSocketResponse
    errors: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # event names since the last open()
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                assert "error" not in message, message
                return message.get("result", {})
            self._observe(message)

    async def wait_for(self, event: str) -> None:
        # The event may already have arrived while a call's answer was awaited.
        while event not in self.seen:
            self._observe(await self.ws.receive_json(timeout=30))

    def _observe(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method:
            self.seen.add(method)
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            described = details.get("exception", {}).get("description", "")
            self.errors.append(f"exception: {details.get('text')} {described}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')}")

    async def open(self, url: str) -> dict[str, Any]:
        """Navigate, wait for load, let late errors arrive, and return the page's facts."""
        self.errors.clear()
        self.seen.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")
        await asyncio.sleep(0.3)
        await self.call("Runtime.evaluate", expression="0")  # drains events sent meanwhile
        result = await self.call("Runtime.evaluate", expression=FACTS_JS, returnByValue=True)
        return json.loads(result["result"]["value"])

    async def screenshot(self) -> bytes:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    profile = tmp_path / "profile"
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",  # Chromium picks a port and writes it to the profile
        "--remote-debugging-address=127.0.0.1",
        "--window-size=1280,2000",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                tab = Page(ws)
                for domain in ("Page", "Runtime", "Log"):
                    await tab.call(f"{domain}.enable")
                yield tab
    finally:
        process.kill()
        await process.wait()


async def test_the_error_detection_itself_works(page: Page, tmp_path: Path) -> None:
    # Without this control, "no errors" could mean "not listening".
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><script>console.error('planted');"
        "throw new Error('boom')</script></body></html>",
        encoding="utf-8",
    )
    await page.open(broken.as_uri())
    assert any("boom" in e for e in page.errors), page.errors
    assert any("planted" in e for e in page.errors), page.errors


async def test_html_report_renders_cleanly_in_chromium(page: Page, tmp_path: Path) -> None:
    candidates = {"same": NOISE, "paraphrase": PARAPHRASE, "slow": SLOW}
    exchanges = make_exchanges(240, candidates, seed=17, question=HOSTILE)
    db = write(exchanges, tmp_path / "html.duckdb")
    report = await asyncio.to_thread(build_report, open_db(db), GatesConfig(), examples=4)
    html = tmp_path / "report.html"
    write_html(report, html)

    source = html.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, no script of our own.
    assert "<script" not in source.replace("&lt;script", "")
    assert not re.search(r"""(src|href)=["'](?!data:)""", source)
    assert "url(" not in source and "@import" not in source

    facts = await page.open(html.as_uri())
    assert page.errors == []
    assert facts["pwned"] is None and facts["images"] == 0 and facts["scripts"] == 0
    # One agreement histogram (one scorer) and one latency plot per candidate, with bars.
    assert facts["svgs"] == 2 * len(candidates)
    assert facts["bars"] > 20 * len(candidates)
    # Per candidate: gates, agreement, latency, reliability, slices, examples, and one table
    # of pairs for each of its worst slices.
    worst = sum(1 for c in report.candidates.values() for row in c.slices if row.examples)
    assert worst == 3 * len(candidates)
    assert facts["tables"] == 6 * len(candidates) + worst
    diff_rows = sum(len(row.examples) for c in report.candidates.values() for row in c.slices)
    assert facts["diffRows"] == diff_rows > 0
    assert facts["exampleRows"] == 4 * len(candidates) + diff_rows
    # The worst slices' pairs side by side, the differing words marked on both sides.
    assert {"del", "ins"} <= set(facts["marks"])
    assert sorted(facts["badges"]) == sorted(c.verdict for c in report.candidates.values()), facts[
        "badges"
    ]
    assert report.candidates["slow"].verdict == "fail"
    # Stored prompts show as text, markup and all.
    assert "<script>window.pwned" in facts["text"] and "ünïcode" in facts["text"]
    assert "p95_latency_ratio" in facts["text"]
    assert facts["width"] <= 1280, "the page should not scroll sideways"

    png = await page.screenshot()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    await asyncio.to_thread((tmp_path / "report.png").write_bytes, png)  # for a human to look
