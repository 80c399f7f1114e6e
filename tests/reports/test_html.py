"""index.html in a real headless Chromium (DevTools protocol over a pipe): the table renders, a mouse click on
a header sorts it both ways, every image loads from a relative path, and nothing is fetched from outside."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from harness.reports import load_runs, write_results_report
from tests.support.cdp_pipe import Browser, find_chromium
from tests.support.report_rows import make_run, sweep_cells


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                   "chromium"]):
            try:
                subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired):
                break
        binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed and could not be installed (needs root and apt: "
                    "`apt-get install chromium`); the HTML leaderboard was not checked in a browser")
    return binary


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("html") / "run", sweep_cells(), replicates=50, images=2)
    write_results_report(load_runs([run]), run)
    return run / "index.html"


@pytest.fixture
def browser(chromium, tmp_path):
    b = Browser(chromium, tmp_path / "profile")
    yield b
    b.close()


COLUMN = """Array.from(document.querySelectorAll('#board-0 tbody tr')).map(tr =>
    tr.children[Array.from(document.querySelectorAll('#board-0 thead th')).findIndex(th =>
        th.textContent.startsWith(%r))].dataset.sort)"""


def header_centre(browser: Browser, session: str, label: str) -> tuple[float, float]:
    rect = browser.evaluate(session, f"""(() => {{
        const th = Array.from(document.querySelectorAll('#board-0 thead th'))
            .find(t => t.textContent.startsWith({label!r}));
        th.scrollIntoView(); const r = th.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];
    }})()""")
    return rect[0], rect[1]


def test_the_page_uses_no_external_assets(page):
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "a URL outside the run directory"
    assert "<script src" not in text and "<link" not in text


def test_table_renders_and_sorts_on_a_real_click(browser, page):
    session = browser.open(page.as_uri())
    rows = browser.evaluate(session, "document.querySelectorAll('#board-0 tbody tr').length")
    assert rows == len(sweep_cells())
    headers = browser.evaluate(session, "Array.from(document.querySelectorAll('#board-0 thead th'))"
                                        ".map(t => t.textContent)")
    assert headers[:3] == ["rank", "model", "steps"] and "fid ↓" in headers and "MMHM ↑" in headers
    # rendered visibly, not just present in the DOM
    assert browser.evaluate(session, "document.querySelector('#board-0').getBoundingClientRect().height") > 50

    initial = [float(v) for v in browser.evaluate(session, COLUMN % "MMHM")]
    assert initial == sorted(initial, reverse=True)  # the page opens ranked by MMHM
    browser.click(session, *header_centre(browser, session, "fid"))
    fid_up = [float(v) for v in browser.evaluate(session, COLUMN % "fid")]
    assert fid_up == sorted(fid_up) and fid_up != [float(v) for v in sorted(fid_up, reverse=True)]
    assert browser.evaluate(session, "Array.from(document.querySelectorAll('#board-0 thead th'))"
                                     ".find(t => t.textContent.startsWith('fid')).getAttribute('aria-sort')") \
        == "ascending"
    browser.click(session, *header_centre(browser, session, "fid"))
    fid_down = [float(v) for v in browser.evaluate(session, COLUMN % "fid")]
    assert fid_down == sorted(fid_up, reverse=True)
    browser.click(session, *header_centre(browser, session, "model"))
    models = browser.evaluate(session, COLUMN % "model")
    assert models == sorted(models) and set(models) == {"onestep", "multi"}
    assert browser.evaluate(session, "document.querySelectorAll('#board-0 tbody tr').length") == rows


def test_every_plot_and_grid_image_loads(browser, page):
    session = browser.open(page.as_uri())
    images = browser.evaluate(session, """Array.from(document.images).map(i =>
        [i.getAttribute('src'), i.complete && i.naturalWidth > 0])""")
    assert any(src.startswith("plots/grid_") for src, _ in images)
    assert len(images) >= 10 and all(ok for _, ok in images), [src for src, ok in images if not ok]
