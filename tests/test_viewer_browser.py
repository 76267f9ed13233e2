"""The viewer in headless Chromium: selecting a point changes the curve and context panes; hostile token text runs
nothing; 10,000 points stay responsive. Pages are served from 127.0.0.1 by a thread; screenshots go to
test-artifacts/ (git-ignored).

Needs Debian chromium at /usr/bin/chromium (``apt-get install chromium``); without it these tests skip, except with
``CI=true``, where they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from helpers.atlas import HOSTILE_TEXT, MARKUP_TOKEN, synthetic_atlas
from helpers.paths import REPO_ROOT
from helpers.recipes import RECIPES
from helpers.viewer import export_html, viewer_html

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
STEPS = RECIPES["pico"].steps


def _need_chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing and CI=true: install Debian chromium (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: install Debian chromium (apt-get install chromium) to run browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("python playwright is missing and CI=true")
        pytest.skip("python playwright is not installed (pip install playwright; never `playwright install`)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder of pages served on 127.0.0.1: a book-like page (shared plotly.min.js + fragment), a standalone
    export with hostile token text, and a 10,000-point standalone export."""
    _need_chromium()
    from plotly.offline import get_plotlyjs

    root = tmp_path_factory.mktemp("viewer-site")
    (root / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    atlas = synthetic_atlas(STEPS, n=2000, seed=11, hostile=True)
    fragment = viewer_html(atlas, plotly_js="global", element_id="atlas-a")
    (root / "book.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>'
        f'<body style="width:1100px">{fragment}</body></html>',
        encoding="utf-8",
    )
    export_html(atlas, root / "hostile.html", element_id="atlas-h")
    export_html(synthetic_atlas(STEPS, n=10_000, seed=12), root / "big.html", element_id="atlas-big")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url, root_id):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    events = {"dialogs": [], "errors": []}
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.goto(url)
    page.wait_for_selector(f"#{root_id}[data-ready='1']", timeout=60_000)
    return page, events


def _panes(page, root_id):
    return page.evaluate(
        """(id) => {
          const c = document.getElementById(id + "-curve");
          const last = c.data[c.data.length - 1];
          return {selected: document.getElementById(id).getAttribute("data-selected"),
                  curve: Array.from(last.y), title: c.layout.title.text,
                  context: document.getElementById(id + "-context").textContent,
                  info: document.getElementById(id + "-info").textContent};
        }""",
        root_id,
    )


def _point_on_screen(page, root_id, row):
    """Viewport pixel of map point ``row`` (index into the payload)."""
    return page.evaluate(
        """([id, row]) => {
          const gd = document.getElementById(id + "-map"), L = gd._fullLayout, box = gd.getBoundingClientRect();
          const D = JSON.parse(document.getElementById(id + "-data").textContent);
          return [box.left + L._size.l + L.xaxis.l2p(D.x[row]), box.top + L._size.t + L.yaxis.l2p(D.y[row])];
        }""",
        [root_id, row],
    )


def test_clicking_a_point_changes_the_curve_and_context_panes(site, browser):
    page, events = _open(browser, f"{site}/book.html", "atlas-a")
    assert page.get_attribute("#atlas-a", "data-trace-type") in ("scattergl", "scatter")
    before = _panes(page, "atlas-a")
    assert before["selected"] == "0" and len(before["curve"]) == len(STEPS)
    # turn off hover selection so only the click selects, then click a point far from the selected one
    page.uncheck("#atlas-a .lcv-controls input[type=checkbox] >> nth=0")
    target = page.evaluate(
        """() => { const D = JSON.parse(document.getElementById("atlas-a-data").textContent);
                   let best = 1, far = -1;
                   for (let i = 1; i < D.n; i++) { const d = (D.x[i]-D.x[0])**2 + (D.y[i]-D.y[0])**2;
                     if (d > far && document.getElementById("atlas-a").lcvContext(i).indexOf("made-up") >= 0) { far = d; best = i; } }
                   return best; }"""
    )
    x, y = _point_on_screen(page, "atlas-a", target)
    page.mouse.move(x, y)  # plotly reports a click on the point its hover found: move there first
    page.wait_for_timeout(150)
    page.mouse.click(x, y)
    page.wait_for_function("document.getElementById('atlas-a').getAttribute('data-selected') !== '0'", timeout=10_000)
    after = _panes(page, "atlas-a")
    assert after["curve"] != before["curve"]
    assert after["context"] != before["context"] and after["title"] != before["title"]
    sx, sy = _point_on_screen(page, "atlas-a", page.evaluate("document.getElementById('atlas-a').lcvSelected()"))
    assert abs(sx - x) < 8 and abs(sy - y) < 8  # the point under the click was selected
    # hover selection, switched back on, follows the mouse
    page.check("#atlas-a .lcv-controls input[type=checkbox] >> nth=0")
    clicked = page.evaluate("document.getElementById('atlas-a').lcvSelected()")
    x0, y0 = _point_on_screen(page, "atlas-a", 0)
    page.mouse.move(x0, y0)
    page.wait_for_function(f"document.getElementById('atlas-a').lcvSelected() !== {clicked}", timeout=10_000)
    # overlays: unchecking every other run leaves the mean and the sample's own curve
    n_all = page.evaluate("document.getElementById('atlas-a-curve').data.length")
    for box in page.query_selector_all("#atlas-a .lcv-controls input[type=checkbox]")[1:]:
        box.uncheck()
    assert page.evaluate("document.getElementById('atlas-a-curve').data.length") == 2 < n_all
    page.select_option("#atlas-a select", "shape")
    legend = page.locator("#atlas-a-map .legend").text_content()
    assert "early drop" in legend and "U-shaped" in legend
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer_select.png"), full_page=True)
    assert not events["errors"] and not events["dialogs"]
    page.close()


def test_hostile_token_text_shows_as_text_and_runs_nothing(site, browser):
    page, events = _open(browser, f"{site}/hostile.html", "atlas-h")
    page.evaluate("document.getElementById('atlas-h').lcvSelect(7)")  # every 7th sample carries the hostile text
    panes = _panes(page, "atlas-h")
    assert "</script><img src=x onerror=alert(1)>" in panes["context"]
    assert "<img src=x" in panes["info"]
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("typeof window.__lcvPwned") == "undefined"
    # plotly's hover label shows the markup as text too
    x, y = _point_on_screen(page, "atlas-h", 7)
    page.mouse.move(x, y)
    page.wait_for_selector("#atlas-h-map .hoverlayer .hovertext", timeout=10_000)
    assert "<img src=x" in page.locator("#atlas-h-map .hoverlayer").text_content()
    assert "<img src=x" in page.locator("#atlas-h-curve .gtitle").text_content()
    # a quote, an entity and a tag in a token show exactly as typed in plotly's text (no &quot;, no decoded &amp;)
    page.evaluate("document.getElementById('atlas-h').lcvSelect(11)")
    page.wait_for_function("document.querySelector('#atlas-h-curve .gtitle').textContent.includes('sample 11')")
    assert f"loss on {MARKUP_TOKEN} after" in page.locator("#atlas-h-curve .gtitle").text_content()
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer_hostile.png"), full_page=True)
    assert events["dialogs"] == [] and events["errors"] == []
    assert page.evaluate("typeof window.__lcvPwned") == "undefined"
    assert HOSTILE_TEXT.startswith("</script>")
    page.close()


def test_ten_thousand_points_stay_responsive(site, browser):
    t0 = time.perf_counter()
    page, events = _open(browser, f"{site}/big.html", "atlas-big")
    load_s = time.perf_counter() - t0
    per_select_ms = page.evaluate(
        """() => { const r = document.getElementById("atlas-big"), t = performance.now();
                   for (let k = 0; k < 40; k++) r.lcvSelect((k * 997) % 10000);
                   return (performance.now() - t) / 40; }"""
    )
    # hover across the map: each move selects the point under the mouse
    box = page.locator("#atlas-big-map").bounding_box()
    t1 = time.perf_counter()
    for k in range(30):
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.02 * k), box["y"] + box["height"] * 0.5)
    hover_ms = (time.perf_counter() - t1) / 30 * 1000
    print(f"10,000 points: ready in {load_s:.2f} s, {per_select_ms:.1f} ms per selection, {hover_ms:.1f} ms per hover move")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer_10k.png"), full_page=True)
    assert load_s < 30 and per_select_ms < 150 and hover_ms < 250
    assert not events["errors"]
    page.close()


def test_viewer_in_the_built_book(browser, request):
    """The viewer on the built page of notebook 02 (of the book the tests build on nano, or of ``$BOOK_HTML``, e.g.
    ``_build/html`` after ``make book``): loads with the book's shared plotly.js (no second copy), and clicking a
    point changes the curve and context panes."""
    given = os.environ.get("BOOK_HTML")
    html_root = Path(given) if given else request.getfixturevalue("built_book")
    pages = sorted(html_root.glob("**/02_*.html"))
    assert pages, f"no built page of notebook 02 under {html_root}"
    text = pages[0].read_text(encoding="utf-8")
    assert text.count("plotly.js v") <= 1, "the page carries its own copy of plotly.js"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html_root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{server.server_port}/{pages[0].relative_to(html_root).as_posix()}")
        page.wait_for_selector(".lcv[data-ready='1']", timeout=60_000)
        root_id = page.get_attribute(".lcv", "id")
        page.locator(f"#{root_id}-map").scroll_into_view_if_needed()
        before = _panes(page, root_id)
        page.uncheck(f"#{root_id} .lcv-controls input[type=checkbox] >> nth=0")  # only the click selects
        target = page.evaluate(
            """(id) => { const D = JSON.parse(document.getElementById(id + "-data").textContent), s = document.getElementById(id).lcvSelected();
                         let best = 0, far = -1;
                         for (let i = 0; i < D.n; i++) { const d = (D.x[i]-D.x[s])**2 + (D.y[i]-D.y[s])**2; if (d > far) { far = d; best = i; } }
                         return best; }""",
            root_id,
        )
        x, y = _point_on_screen(page, root_id, target)
        page.mouse.move(x, y)
        page.wait_for_timeout(150)
        page.mouse.click(x, y)
        page.wait_for_function(f"document.getElementById('{root_id}').getAttribute('data-selected') !== '{before['selected']}'", timeout=10_000)
        after = _panes(page, root_id)
        assert after["context"] != before["context"] and after["curve"] != before["curve"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer_book.png"), full_page=False)
        assert not errors
    finally:
        server.shutdown()
