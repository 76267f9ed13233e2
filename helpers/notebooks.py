"""Keep the chapters' notebooks in their committed form: one shared setup cell, no outputs.

    python -m helpers.notebooks            # rewrite every notebooks/*.ipynb
    python -m helpers.notebooks --check    # exit 1 (and name them) if any notebook differs from that form

The setup cell is the first code cell, right after the chapter's title (a Markdown cell starting with ``# ``), or
the first cell when there is no title. On Colab it installs the helpers from the repository (``pip install "helpers
@ git+<url>@<branch>"``, so pip applies the pins of pyproject.toml, which match environment.yml); everywhere it calls
:func:`helpers.book.setup_notebook`, which prints the suite of the session. The URL and branch are the
``repository`` settings of ``_config.yml``. In the book its source is folded away (``hide-input``) and its output,
``suite: <name>``, states under the title which suite the page was computed on.
Every cell loses its outputs and execution count; the notebook gets the ``python3`` kernelspec Colab expects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .paths import REPO_ROOT

SETUP_CELL_ID = "setup"
SETUP_TAGS = ["setup", "hide-input"]  # the book shows its output (the suite) and folds its source away
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
CONFIG = REPO_ROOT / "_config.yml"


def repository(config: Path = CONFIG) -> tuple[str, str]:
    """``(url, branch)`` from the ``repository`` section of ``_config.yml``."""
    import yaml

    if not config.exists():
        raise FileNotFoundError(f"{config} is missing: it holds the repository URL the first cell installs from")
    repo = (yaml.safe_load(config.read_text()) or {}).get("repository") or {}
    url = str(repo.get("url") or "").rstrip("/")
    if not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be an https URL, got {url!r}")
    return url, str(repo.get("branch") or "main")


def setup_source(url: str, branch: str) -> str:
    """The source of the first cell of every chapter."""
    return f'''\
# Setup. On Colab: install the book's helpers from the repository (pip applies the pins of environment.yml).
# Everywhere: pick the suite ($BOOK_SUITE; on a Colab GPU the Pythia hub suite). Written by `python -m helpers.notebooks`.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "helpers @ git+{url}@{branch}"], check=True)

from helpers.book import setup_notebook

SUITE = setup_notebook()'''


def setup_cell(url: str, branch: str):
    import nbformat

    cell = nbformat.v4.new_code_cell(setup_source(url, branch))
    cell.id = SETUP_CELL_ID
    cell.metadata = nbformat.NotebookNode({"tags": list(SETUP_TAGS)})
    return cell


def _is_setup(cell) -> bool:
    return cell.get("id") == SETUP_CELL_ID or SETUP_CELL_ID in cell.get("metadata", {}).get("tags", [])


def _is_title(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith("# ")


def setup_index(cells) -> int:
    """Where the setup cell goes among ``cells`` (the notebook's other cells): after a leading title cell, else 0."""
    return 1 if cells and _is_title(cells[0]) else 0


def normalise(nb, url: str, branch: str):
    """``nb`` in its committed form: the setup cell after the title (replacing an old one), no outputs, python3
    kernelspec."""
    import nbformat

    nb.nbformat, nb.nbformat_minor = 4, max(5, nb.get("nbformat_minor", 5))
    cells = [c for c in nb.cells if not _is_setup(c)]
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if not cell.get("id") or cell.get("id") == SETUP_CELL_ID:
            cell.id = f"cell-{i}"
    at = setup_index(cells)
    nb.cells = cells[:at] + [setup_cell(url, branch)] + cells[at:]
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = nbformat.NotebookNode(KERNELSPEC)
    nb.metadata.setdefault("language_info", nbformat.NotebookNode({"name": "python"}))
    nbformat.validate(nb)
    return nb


def _text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def process(paths: list[Path], check: bool, config: Path = CONFIG) -> list[Path]:
    """Normalise the notebooks (or, with ``check``, only report them); return those that differed."""
    import nbformat

    url, branch = repository(config)
    changed = []
    for path in paths:
        before = path.read_text()
        try:
            nb = nbformat.reads(before, as_version=4)
        except Exception as e:
            from .suites import one_line

            raise ValueError(f"{path}: not a readable notebook ({type(e).__name__}: {one_line(e)})") from None
        after = _text(normalise(nb, url, branch))
        if after != before:
            changed.append(path)
            if not check:
                path.write_text(after)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook would change")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    try:
        changed = process(paths, args.check)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'would rewrite' if args.check else 'rewrote'} {path}")
    if args.check and changed:
        print("run `python -m helpers.notebooks` to write the shared first cell and strip outputs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
