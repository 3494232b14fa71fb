"""The fleet page and the drill page in a real browser: headless Chromium (Debian's `chromium`,
installed by ./scripts/bootstrap) loads each page from a file:// URL with its networking
features off, takes a screenshot, and dumps the DOM after layout.

Screenshots are kept as test artefacts in .artefacts/screenshots/ ($DRKIT_ARTEFACTS overrides
.artefacts). For the layout checks the test loads a copy of each page with a probe script
appended that writes what the browser laid out (lines per fingerprint, chart point heights)
into data- attributes; the pages drkit writes carry no script.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleets import bucket_config, drill_history, failed_drill, write_fleet

from drkit.actions import report as report_action
from drkit.engines import reports
from drkit.engines.storage import Storage
from drkit.model import utc_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1400, 1800
PROBE = """<script>
for (const code of document.querySelectorAll("code.fp"))
  code.dataset.lines = code.getClientRects().length;
for (const circle of document.querySelectorAll("svg circle"))
  circle.dataset.screenY = Math.round(circle.getBoundingClientRect().top);
for (const row of document.querySelectorAll("tr.node"))
  row.dataset.top = Math.round(row.getBoundingClientRect().top);
document.body.dataset.probed = "yes";
</script>"""


def artefacts() -> Path:
    """Return where screenshots are kept (created on demand)."""
    path = Path(os.environ.get("DRKIT_ARTEFACTS") or ROOT / ".artefacts") / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on a file:// page, nothing beyond it (no first-run, background,
    component or sync traffic); stop its whole process group, whatever happens."""
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root here; the page is ours and local
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-features=MediaRouter,OptimizationHints,Translate",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *mode,
        page.resolve().as_uri(),
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, stderr[-2000:]
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def screenshot(page: Path, profile: Path, name: str) -> Path:
    target = artefacts() / f"{name}.png"
    target.unlink(missing_ok=True)
    chromium(page, profile, f"--screenshot={target}")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (WIDTH, HEIGHT)
    return target


def laid_out_dom(page: Path, profile: Path) -> str:
    """Return the DOM of a probed copy of page after Chromium laid it out."""
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(probed, profile, "--dump-dom", "--virtual-time-budget=2000").stdout
    assert 'data-probed="yes"' in dom, dom[:500]
    return dom


@pytest.fixture
def bucket(local_s3, tmp_path: Path):
    return bucket_config(local_s3, tmp_path)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run ./scripts/bootstrap")
    path = tmp_path / "chromium-profile"
    path.mkdir()
    return path


def test_fleet_page_in_chromium_lists_every_node_breached_first(bucket, tmp_path, profile):
    storage = Storage(bucket.repository)
    documents = write_fleet(storage, 36)
    page = tmp_path / "fleet.html"
    result = report_action.fleet(bucket, out=page)
    shot = screenshot(page, profile, "fleet")
    dom = laid_out_dom(page, profile)
    rows = re.findall(r'<tr class="node [^"]*" id="node-([^"]+)" data-node="[^"]+" '
                      r'data-breached="(true|false)" data-top="(\d+)"', dom)  # fmt: skip
    assert sorted(name for name, _, _ in rows) == sorted(documents)
    flags = [breached == "true" for _, breached, _ in rows]
    assert flags == sorted(flags, reverse=True) and flags.count(True) == result.breached > 0
    tops = [int(top) for _, _, top in rows]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)  # drawn in that order, one each
    assert f"{result.breached} OF {len(documents)} BREACHED" in dom
    assert shot.stat().st_size > 20_000


def test_drill_page_in_chromium_shows_failures_first_and_readable_charts(tmp_path, profile):
    document = failed_drill()
    history = drill_history([3.2, 9.8, 6.1, 4.0])
    history[-1].update(ok=False, time=document["started"])
    page = tmp_path / "drill.html"
    page.write_text(reports.render_html(document, history))
    screenshot(page, profile, "drill")
    dom = laid_out_dom(page, profile)
    assert dom.index('id="what-failed"') < dom.index("<h2>Objectives</h2>")
    lines = re.findall(r'<code class="fp" data-lines="(\d+)">SHA256:', dom)
    assert lines == ["1", "1", "1"]  # signer, backed-up and served fingerprints unbroken
    rto_chart = dom.split('aria-label="RTO per drill"')[1].split("</svg>")[0]
    heights = [int(y) for y in re.findall(r'data-screen-y="(\d+)"', rto_chart)]
    assert len(heights) == 4 and max(heights) - min(heights) > 80  # 3 s to 10 s, visibly apart
    assert "objective 10 min (off scale, above)" in rto_chart


def test_a_fleet_page_of_an_expiring_certificate_shows_it_in_the_calendar(
    bucket, tmp_path, profile
):
    storage = Storage(bucket.repository)
    now = datetime.now(UTC)
    document = write_fleet(storage, 1)["n-0000"]
    document["last_backup"]["certificates"] = [
        {"path": "/etc/ssh/host-cert.pub", "kind": "host", "subject": "sftp-1",
         "not_after": utc_text(now + timedelta(days=20))},
    ]  # fmt: skip
    storage.put_json("status/n-0000.json", document)
    page = tmp_path / "fleet.html"
    report_action.fleet(bucket, out=page)
    dom = laid_out_dom(page, profile)
    calendar = dom.split('id="calendar"')[1].split("</table>")[0]
    assert 'data-node="n-0000"' in calendar and "/etc/ssh/host-cert.pub" in calendar
    assert "host certificate" in calendar
