"""The rendered book, proved page by page in a real browser.

Builds the book on the ``nano`` suite (``jupyter-book build . -W -n --keep-going`` into a temporary folder, with the
tests' data root), serves the HTML on 127.0.0.1 and opens every page in headless Debian Chromium. A page fails on a
console error, a blocked request to another host (the book must work offline), a plotly figure that did not render,
math that MathJax did not typeset, or fewer figures than its notebook made. One full-page screenshot per page goes to
``test-artifacts/book/``, with the build log.

Without /usr/bin/chromium the browser part is skipped (``make chromium`` installs it); with ``CI=true`` it fails.
Set ``BOOK_TEST_DATA=<dir>`` to keep the data and the built book (and its execution cache) between sessions, and
``BOOK_SOURCE=<dir>`` to build another checkout of the book.

Check a book you built yourself: ``python tests/test_book_browser.py _build/html``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BUILD_LOG, SOURCE

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "book"
SKIP_PAGES = {"genindex.html", "search.html", "index.html"}  # index.html only redirects to the intro
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


# ---- what the build made ------------------------------------------------------------------------------------


def expected_figures(html_root: Path) -> dict[str, int]:
    """Figures each executed notebook made (``{page: count}``), from the outputs myst-nb rendered; raises if a
    notebook emitted a plotly figure the static page cannot show (plotly's own mime type, not helpers.figures.show)
    or an ipywidgets view (a dead box without a kernel)."""
    executed = html_root.parent / "jupyter_execute"
    counts: dict[str, int] = {}
    for path in sorted(executed.rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        n, dropped, widgets = 0, 0, 0
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                html = data.get("text/html", "")
                html = "".join(html) if isinstance(html, list) else html
                n += html.count('class="plotly-graph-div"')
                dropped += PLOTLY_MIME in data and "text/html" not in data
                widgets += WIDGET_MIME in data
        page = path.relative_to(executed).with_suffix(".html").as_posix()
        if dropped:
            raise AssertionError(f"{page}: {dropped} plotly output(s) the static book drops; show figures with helpers.figures.show")
        if widgets:
            raise AssertionError(f"{page}: {widgets} ipywidgets output(s), dead without a kernel; show them only outside the book build")
        counts[page] = n
    return counts


# ---- serving and visiting ---------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on 127.0.0.1 (a free port) from a daemon thread; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def book_pages(html_root: Path) -> list[str]:
    return sorted(
        p.relative_to(html_root).as_posix()
        for p in html_root.rglob("*.html")
        if p.name not in SKIP_PAGES and not p.relative_to(html_root).parts[0].startswith("_")
    )


@dataclass
class PageReport:
    page: str
    figures: int = 0  # plotly divs on the page
    rendered: int = 0  # of those, drawn by plotly (svg, traces, live event handlers)
    math: int = 0  # math elements in the page source
    typeset: int = 0  # MathJax containers after typesetting
    errors: list[str] = field(default_factory=list)  # console errors and page exceptions
    offsite: list[str] = field(default_factory=list)  # blocked requests to other hosts
    screenshot: str = ""


_PAGE_STATE = """() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  const drawn = divs.filter(gd => gd.querySelector('.plot-container .main-svg') && gd._fullData
      && gd._fullData.length > 0 && typeof gd.on === 'function' && gd.getBoundingClientRect().height > 50);
  return {figures: divs.length, rendered: drawn.length,
          math: document.querySelectorAll('.math').length,
          typeset: document.querySelectorAll('mjx-container').length};
}"""

_MATHJAX_READY = """() => new Promise(resolve => {
  if (!document.querySelector('.math')) return resolve(true);
  const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
      ? MathJax.startup.promise.then(() => resolve(true)) : setTimeout(wait, 100);
  wait();
})"""


def visit_pages(html_root: Path, artifacts: Path) -> list[PageReport]:
    """Open every page of the built book in headless Chromium; one report (and screenshot) per page."""
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(parents=True, exist_ok=True)
    server, base = serve(html_root)
    reports = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--no-first-run"],
            )
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    return r.continue_()
                current.offsite.append(r.request.url)
                return r.abort()

            context.route("**/*", route)
            for page_name in book_pages(html_root):
                current = PageReport(page_name)
                page = context.new_page()
                page.on("console", lambda m, rep=current: m.type == "error" and rep.errors.append(f"console: {m.text}"))
                page.on("pageerror", lambda e, rep=current: rep.errors.append(f"exception: {e}"))
                page.goto(base + page_name, wait_until="load")
                page.evaluate(_MATHJAX_READY)
                try:
                    page.wait_for_function(
                        "() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                        ".every(gd => gd.querySelector('.main-svg'))",
                        timeout=20_000,
                    )
                except Exception:
                    pass  # reported below as figures that did not render
                state = page.evaluate(_PAGE_STATE)
                current.figures, current.rendered = state["figures"], state["rendered"]
                current.math, current.typeset = state["math"], state["typeset"]
                shot = artifacts / (page_name.replace("/", "__").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                current.screenshot = str(shot)
                reports.append(current)
                page.close()
            browser.close()
    finally:
        server.shutdown()
    return reports


def problems(reports: list[PageReport], expected: dict[str, int]) -> list[str]:
    """Every failure of every page, one line each."""
    out = []
    for r in reports:
        out += [f"{r.page}: {e}" for e in r.errors]
        out += [f"{r.page}: request to another host blocked (the book must work offline): {u}" for u in r.offsite]
        if r.rendered < r.figures:
            out.append(f"{r.page}: {r.figures - r.rendered} of {r.figures} plotly figures did not render")
        if r.page in expected and r.figures < expected[r.page]:
            out.append(f"{r.page}: the notebook made {expected[r.page]} figures, the page has {r.figures}")
        if r.math and not r.typeset:
            out.append(f"{r.page}: {r.math} math elements, none typeset by MathJax")
    return out


def chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    message = f"Debian chromium is not installed at {CHROMIUM} (`make chromium` installs it): browser check of the book skipped"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must run it")
    pytest.skip(message)


# ---- tests ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_reports(built_book) -> list[PageReport]:
    chromium_or_skip()
    return visit_pages(built_book, ARTIFACTS)


def test_build_has_every_toc_page_and_no_dropped_outputs(built_book):
    import yaml

    toc = yaml.safe_load((SOURCE / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    missing = [f for f in files if not (built_book / f"{f}.html").exists()]
    assert not missing, f"pages missing from the build: {missing}"
    log = BUILD_LOG.read_text()
    assert "unknown mime type" not in log.lower()
    assert not re.search(r": WARNING: |^WARNING: ", log, re.M), "the build logged Sphinx warnings"
    expected_figures(built_book)  # raises on a plotly output the static page would drop


def test_intro_states_the_suite_of_the_build(built_book):
    html = (built_book / "book" / "intro.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "computed every figure from the suite nano" in text
    assert "pico-pile" in text
    assert "nano-20k-seed1" in text  # the run table of this build's suite


def test_every_notebook_page_has_a_colab_button(built_book):
    from helpers.notebooks import repository

    url, branch = repository()
    org_repo = url.removeprefix("https://github.com/")
    notebooks = sorted((SOURCE / "notebooks").glob("*.ipynb"))
    pages = [n for n in notebooks if (built_book / "notebooks" / f"{n.stem}.html").exists()]
    assert pages, "no notebook pages were built"
    for nb in pages:
        html = (built_book / "notebooks" / f"{nb.stem}.html").read_text()
        link = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/notebooks/{nb.name}"
        assert link in html, f"{nb.name}: no Colab launch button to {link}"


def test_plotly_and_mathjax_are_served_locally(built_book):
    import plotly

    static = built_book / "_static"
    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert (static / "plotly.min.js").read_bytes() == shipped
    assert (static / "mathjax" / "tex-chtml-full.js").exists()
    html = (built_book / "book" / "intro.html").read_text()
    assert '<script src="../_static/plotly.min.js' in html
    assert "cdn.plot.ly" not in html and "cdn.jsdelivr.net" not in html


def test_every_page_renders_in_chromium(built_book, page_reports):
    expected = expected_figures(built_book)
    assert {r.page for r in page_reports} >= {p for p in expected}, "a notebook page was not visited"
    found = problems(page_reports, expected)
    assert not found, "\n".join(found)
    for r in page_reports:
        assert Path(r.screenshot).stat().st_size > 10_000, f"{r.page}: screenshot is blank"
    intro = next(r for r in page_reports if r.page == "book/intro.html")
    assert intro.figures >= 1 and intro.rendered == intro.figures  # the suite's training loss
    assert intro.typeset >= 1  # the loss formula


def test_page_checks_catch_broken_pages(tmp_path):
    """The checks fail where they should: a figure without plotly.js, a console error, an offsite request."""
    chromium_or_skip()
    import plotly.graph_objects as go

    from helpers.figures import figure_html

    fig_html = figure_html(go.Figure(go.Scatter(x=[1, 2], y=[2, 1])))
    static = tmp_path / "_static"
    static.mkdir()
    (static / "plotly.min.js").write_bytes((Path(__import__("plotly").__file__).parent / "package_data" / "plotly.min.js").read_bytes())
    page = '<html><head>{head}</head><body>{body}</body></html>'
    (tmp_path / "good.html").write_text(page.format(head='<script src="_static/plotly.min.js"></script>', body=fig_html))
    (tmp_path / "no_plotly.html").write_text(page.format(head="", body=fig_html))
    (tmp_path / "offsite.html").write_text(page.format(head='<script src="https://cdn.example.org/x.js"></script>', body="<p>x</p>"))
    (tmp_path / "throws.html").write_text(page.format(head="", body="<script>undefinedFunction()</script>"))
    reports = {r.page: r for r in visit_pages(tmp_path, tmp_path / "shots")}
    assert not problems([reports["good.html"]], {"good.html": 1})
    assert any("did not render" in p for p in problems([reports["no_plotly.html"]], {}))
    assert any("offline" in p for p in problems([reports["offsite.html"]], {}))
    assert any("undefinedFunction" in p for p in problems([reports["throws.html"]], {}))
    assert any("made 2 figures" in p for p in problems([reports["good.html"]], {"good.html": 2}))


def test_expected_figures_flags_outputs_the_static_page_cannot_show(tmp_path):
    import nbformat

    from helpers.figures import figure_html
    import plotly.graph_objects as go

    executed = tmp_path / "jupyter_execute" / "notebooks"
    executed.mkdir(parents=True)
    html_root = tmp_path / "html"

    def write(name, data):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("display_data", data=d) for d in data]
        nb.cells = [cell]
        nbformat.write(nb, executed / name)

    fig = figure_html(go.Figure(go.Scatter(x=[1], y=[1])))
    write("01_good.ipynb", [{"text/html": fig}, {"text/html": fig}, {"text/plain": "x"}])
    assert expected_figures(html_root) == {"notebooks/01_good.html": 2}
    write("02_plotly_mime.ipynb", [{PLOTLY_MIME: {"data": []}, "text/plain": "Figure"}])
    with pytest.raises(AssertionError, match="drops"):
        expected_figures(html_root)
    (executed / "02_plotly_mime.ipynb").unlink()
    write("03_widget.ipynb", [{WIDGET_MIME: {"model_id": "x"}, "text/plain": "VBox()"}])
    with pytest.raises(AssertionError, match="ipywidgets"):
        expected_figures(html_root)


if __name__ == "__main__":  # check an existing build: python tests/test_book_browser.py _build/html
    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "_build" / "html").resolve()
    reports = visit_pages(root, ARTIFACTS)
    found = problems(reports, expected_figures(root))
    for r in reports:
        print(f"{r.page}: {r.rendered}/{r.figures} figures, {r.typeset} math typeset, {len(r.errors)} errors -> {r.screenshot}")
    print("\n".join(found) or "all pages pass")
    sys.exit(1 if found else 0)
