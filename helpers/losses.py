"""The loss table: per-token losses of every run at every checkpoint, stored one parquet per (run, step).

Layout under ``<data>/losses/<suite>/``::

    <mode>-<split>-<key>/settings.json           every setting that changes the numbers; <key> is their hash
    <mode>-<split>-<key>/samples.parquet         the samples table (see helpers.samples)
    <mode>-<split>-<key>/<run>/step<N>-<ckpt>.parquet   run, step, sample_id, loss (float32, nats)
    validation-<key>/<run>/step<N>-<ckpt>.parquet       run, step, loss (mean over all validation positions), tokens

``<ckpt>`` identifies the weights (sha256 from suite.json, or hub repo@revision), so a retrained suite never reuses
old losses. Each file is written atomically; a file that exists is complete. Reading::

    table = load_losses("pico")             # extracts what is missing first
    table.frame()                           # polars: run, step, sample_id, loss
    losses, steps = table.matrix("pico-0.6m")  # float32 [n_samples, n_steps], columns in step order
    table.validation()                      # polars: run, step, loss
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from .paths import data_root

class LossTableError(RuntimeError):
    """A loss file on disk cannot be read as part of its table. The message is one line and names the file."""


LOSS_CODE_VERSION = 1  # bump when the loss computation changes the numbers
LOSS_SCHEMA = {"run": pl.String, "step": pl.Int64, "sample_id": pl.Int64, "loss": pl.Float32}
VALIDATION_SCHEMA = {"run": pl.String, "step": pl.Int64, "loss": pl.Float64, "tokens": pl.Int64}


def losses_root() -> Path:
    return data_root() / "losses"


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_id(suite, run: str, step: int) -> str:
    """12 hex digits that change when the weights of ``run`` at ``step`` change."""
    r = suite.run(run)
    if r.sha256.get(step):
        return r.sha256[step][:12]
    ident = f"{r.source}@{r.revisions.get(step, step)}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def step_file(folder: Path, suite, run: str, step: int) -> Path:
    return folder / run / f"step{step:06d}-{checkpoint_id(suite, run, step)}.parquet"


@dataclass
class Layout:
    """Where the losses of one setting live: the samples folder and the validation folder."""

    suite: object
    folder: Path  # <root>/<suite>/<mode>-<split>-<key>
    validation_folder: Path  # <root>/<suite>/validation-<key>
    settings: dict
    validation_settings: dict

    def loss_file(self, run: str, step: int) -> Path:
        return step_file(self.folder, self.suite, run, step)

    def validation_file(self, run: str, step: int) -> Path:
        return step_file(self.validation_folder, self.suite, run, step)

    @property
    def samples_file(self) -> Path:
        return self.folder / "samples.parquet"


def make_layout(
    suite,
    mode: str = "every_k",
    split: str = "test",
    n_samples: int = 10_000,
    n_documents: int | None = None,
    context: int | None = None,
    device_type: str = "cpu",
    precision: str = "fp32",
    root: str | Path | None = None,
) -> Layout:
    """The folders for these settings. ``context`` is the cap given by the user (None: the model's context)."""
    from .samples import suite_context, suite_corpus, tokenizer_fingerprint

    corpus = suite_corpus(suite)
    common = {
        "suite": suite.name,
        "corpus": corpus,
        "corpus_sha256": _corpus_sha(suite, corpus),
        "tokenizer": tokenizer_fingerprint(suite),
        "context": suite_context(suite, context),
        "device_type": device_type,
        "precision": precision,
        "loss_code_version": LOSS_CODE_VERSION,
    }
    settings = dict(common, split=split, mode=mode, n_documents=n_documents)
    if mode == "every_k":
        settings["n_samples"] = int(n_samples)
    validation_settings = dict(common, split="validation", mode="all_positions", n_documents=None)
    base = Path(root) if root is not None else losses_root()
    return Layout(
        suite=suite,
        folder=base / suite.name / f"{mode}-{split}-{settings_key(settings)}",
        validation_folder=base / suite.name / f"validation-{settings_key(validation_settings)}",
        settings=settings,
        validation_settings=validation_settings,
    )


def _corpus_sha(suite, corpus: str) -> str:
    meta = getattr(suite, "meta", None)
    if meta and meta.get("corpus_sha256"):
        return meta["corpus_sha256"]
    from .corpus import build_corpus

    path = build_corpus(corpus)
    manifest = path.parent / "manifest.json"
    return json.loads(manifest.read_text())["sha256"] if manifest.exists() else ""


@dataclass
class LossTable:
    """Per-token losses of some runs of a suite, read from the files of one :class:`Layout`.

    Only complete files are read: ``steps(run)`` lists the steps whose losses are on disk.
    """

    layout: Layout
    runs: list[str]
    wanted_steps: dict[str, list[int]] = field(default_factory=dict)  # run -> steps asked for (default: all)
    _samples: pl.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def select(cls, layout: Layout, runs: list[str] | str | None = None, steps=None) -> LossTable:
        """The table of ``runs`` (default: all) at ``steps`` (default: every checkpoint of each run) of the layout's
        suite. Raises :class:`~helpers.suites.SuiteError` (one line) for an unknown run or step."""
        wanted = {r.name: list(r.steps) if steps is None else [r.check_step(s) for s in steps]
                  for r in layout.suite.select(runs)}
        return cls(layout, list(wanted), wanted)

    @property
    def suite(self):
        return self.layout.suite

    @property
    def folder(self) -> Path:
        return self.layout.folder

    @property
    def settings(self) -> dict:
        return self.layout.settings

    @property
    def samples(self) -> pl.DataFrame:
        """The samples table (sample_id, doc_id, domain, position, target_id, target_text, context_text, k, ...)."""
        if self._samples is None:
            if not self.layout.samples_file.exists():
                raise FileNotFoundError(f"no samples table at {self.layout.samples_file}: run the extraction first")
            self._samples = pl.read_parquet(self.layout.samples_file)
        return self._samples

    @property
    def n_samples(self) -> int:
        return self.samples.height

    def _candidate_steps(self, run: str) -> list[int]:
        return self.wanted_steps[run] if run in self.wanted_steps else self.suite.run(run).steps

    def steps(self, run: str) -> list[int]:
        """Steps of ``run`` whose losses are on disk, increasing."""
        return [s for s in self._candidate_steps(run) if self.layout.loss_file(run, s).exists()]

    def missing(self) -> list[tuple[str, int]]:
        """(run, step) pairs asked for whose losses or validation loss are not on disk yet."""
        return [
            (run, s)
            for run in self.runs
            for s in self._candidate_steps(run)
            if not (self.layout.loss_file(run, s).exists() and self.layout.validation_file(run, s).exists())
        ]

    def matrix(self, run: str) -> tuple[np.ndarray, list[int]]:
        """``(losses, steps)``: float32 [n_samples, n_steps] in sample_id order, columns in step order (nats)."""
        if run not in self.runs:
            raise KeyError(f"run {run!r} is not in this table; runs: {self.runs}")
        steps = self.steps(run)
        out = np.empty((self.n_samples, len(steps)), dtype=np.float32)
        for j, s in enumerate(steps):
            path = self.layout.loss_file(run, s)
            try:
                column = pl.read_parquet(path, columns=["loss"])["loss"].to_numpy()
                out[:, j] = column
            except Exception as e:
                raise LossTableError(f"loss file {path} is damaged or does not match the samples table "
                                     f"({type(e).__name__}): delete it and rerun the extraction") from None
        return out, steps

    def frame(self, runs: list[str] | None = None) -> pl.DataFrame:
        """Long frame: run, step, sample_id, loss (float32, nats), ordered by run, step, sample_id."""
        files = [self.layout.loss_file(run, s) for run in (runs or self.runs) for s in self.steps(run)]
        if not files:
            return pl.DataFrame(schema=LOSS_SCHEMA)
        return pl.concat([pl.read_parquet(f) for f in files])

    def validation(self, runs: list[str] | None = None) -> pl.DataFrame:
        """Mean loss over all positions of the validation split: run, step, loss (nats), tokens."""
        files = [
            self.layout.validation_file(run, s)
            for run in (runs or self.runs)
            for s in self._candidate_steps(run)
            if self.layout.validation_file(run, s).exists()
        ]
        if not files:
            return pl.DataFrame(schema=VALIDATION_SCHEMA)
        return pl.concat([pl.read_parquet(f) for f in files])

    def __repr__(self) -> str:
        done = sum(len(self.steps(r)) for r in self.runs)
        return f"LossTable({self.suite.name!r}, {self.settings['mode']}, runs={len(self.runs)}, files={done}, folder={self.folder})"


def load_losses(
    suite_name,
    mode: str = "every_k",
    runs: list[str] | None = None,
    steps: list[int] | None = None,
    split: str = "test",
    n_samples: int = 10_000,
    n_documents: int | None = None,
    context: int | None = None,
    extract_missing: bool = True,
    **engine,
) -> LossTable:
    """The loss table of ``suite_name`` for these settings, extracting whatever is missing first (so a notebook can
    call it on a fresh machine or on Colab). With ``extract_missing=False``, only what is on disk.

    ``engine`` passes on to :func:`helpers.extract.extract` (``batch_size``, ``device``, ``precision``,
    ``progress``, ``root``, ...).
    """
    from .extract import extract, resolve_device
    from .samples import MODES, SamplesError
    from .suites import load_suite

    if extract_missing:
        if isinstance(suite_name, str):
            from .train import ensure_suite

            suite_name = ensure_suite(suite_name)  # a local suite is trained first if it is not yet
        return extract(
            suite_name, runs=runs, steps=steps, mode=mode, split=split, n_samples=n_samples, n_documents=n_documents,
            context=context, **engine,
        )
    from .corpus import SPLITS

    if mode not in MODES:
        raise SamplesError(f"unknown sampling mode {mode!r}; valid: {list(MODES)}")
    if split not in SPLITS:
        raise SamplesError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    suite = load_suite(suite_name) if isinstance(suite_name, str) else suite_name
    device, precision = resolve_device(engine.get("device"), engine.get("precision"), available=False)
    layout = make_layout(suite, mode, split, n_samples, n_documents, context, device.split(":")[0], precision, engine.get("root"))
    return LossTable.select(layout, runs, steps)
