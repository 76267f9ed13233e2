"""The per-token loss engine: losses of the sampled targets at every checkpoint of every run, resumable.

    python -m helpers.extract --suite pico                       # every run and step, Michaud sampling
    python -m helpers.extract --suite pico --mode all_positions --n-documents 50
    python -m helpers.extract --suite pythia-small --context 1024 --shard 0/4   # a quarter of the (run, step) work

or from Python: ``extract("pico") -> LossTable`` (see :mod:`helpers.losses` for the files and the readers).

How it is fast (all measured in ``benchmarks/extract.py``):

- each document window runs once per checkpoint, in batches of windows of similar length (right-padded; the model
  is causal, so padding never changes the losses of real tokens), under ``torch.inference_mode``; bf16 autocast on
  CUDA, fp32 on CPU;
- the output embedding is applied only at the positions whose losses are needed (the hidden state at
  ``position - 1`` predicts the token at ``position``), in chunks of rows, so ``[batch, seq, vocab]`` logits are
  never materialised whole, in either mode;
- the next checkpoint is fetched (and on CUDA loaded) on a background thread while the current one computes;
- a hub revision that the extraction downloaded is deleted from the Hugging Face cache once its losses are written
  (a suite such as ``pythia-small`` is 350 GB of checkpoints; revisions cached before are kept);
- the batch size halves on out-of-memory and stays halved.

Every (run, step) is written atomically as soon as it is done, so an interrupted extraction resumes where it
stopped. A missing or corrupt checkpoint, or non-finite losses, are reported as one line naming the run and step;
the other steps go on and finished ones stay on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from .atomic import atomic_path, clean_stale_temporaries, write_json
from .losses import Layout, LossTable, make_layout
from .samples import MODES, Documents, SamplesError, samples_frame, select_targets, tokenize_split
from .suites import SuiteError, load_suite

CHUNK_ELEMENTS = 1 << 24  # logits computed at most this many at a time (64 MB in fp32)
CPU_BATCH_TOKENS = 4096  # default batch: this many tokens of windows on CPU (measured on pico) ...
CUDA_BATCH_TOKENS = 32768  # ... and on CUDA
GIVE_UP_AFTER = 3  # hub suites: stop when this many first checkpoints in a row cannot be fetched (no network)


class ExtractionError(RuntimeError):
    """One line per (run, step) that could not be extracted (missing/corrupt checkpoint, non-finite losses)."""


def resolve_device(device: str | None = None, precision: str | None = None, available: bool = True) -> tuple[str, str]:
    """``(device, precision)``: CUDA if available, else CPU; bf16 autocast on CUDA, fp32 on CPU by default.
    ``available=False`` only names the settings (to read a table computed elsewhere), without asking for the device."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:<index>") from None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; valid: cpu, cuda, cuda:<index>")
    if available and kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here; use --device cpu")
    if precision is None:
        precision = "bf16" if device.startswith("cuda") else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; valid: ['fp32', 'bf16']")
    return device, precision


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Engine:
    """Batched loss computation for one set of windows and targets, reused across checkpoints.

    ``documents.tokens[w]`` are the windows; sample ``i`` is the token at ``position[i]`` of window ``window[i]``.
    """

    def __init__(self, device: str = "cpu", precision: str = "fp32", batch_size: int | None = None, chunk_elements: int = CHUNK_ELEMENTS):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be at least 1 window, got {batch_size}")
        self.device, self.precision = resolve_device(device, precision)
        self.batch_size = batch_size
        self.chunk_elements = chunk_elements
        self.last_tokens = 0  # tokens run through the model by the last call of losses()

    def default_batch_size(self, context: int) -> int:
        budget = CUDA_BATCH_TOKENS if self.device.startswith("cuda") else CPU_BATCH_TOKENS
        return max(1, budget // context)

    def losses(self, model, documents: Documents, window: np.ndarray, position: np.ndarray) -> np.ndarray:
        """float32 [n_samples]: ``-log p(token[position] | token[:position])`` (nats) of each sample, in order."""
        import torch

        if self.batch_size is None:
            self.batch_size = self.default_batch_size(documents.context)
        # the model is causal: a window is needed only up to (not including) its last sampled position, and a window
        # without samples not at all
        lengths = np.zeros(len(documents), dtype=np.int64)
        np.maximum.at(lengths, window, position)
        order = np.argsort(-lengths, kind="stable")  # long windows first: batches of similar length
        order = order[lengths[order] > 0]
        self.last_tokens = int(lengths.sum())  # tokens run through the model
        by_window = np.argsort(window, kind="stable")  # sample indices grouped by window
        starts = np.searchsorted(window[by_window], np.arange(len(lengths) + 1))
        targets = np.array([documents.tokens[w][p] for w, p in zip(window, position)], dtype=np.int64)
        out = np.full(len(window), np.nan, dtype=np.float32)
        done = 0
        with torch.inference_mode():
            while done < len(order):
                batch = order[done : done + self.batch_size]
                samples = np.concatenate([by_window[starts[w] : starts[w + 1]] for w in batch])
                if len(samples) == 0:
                    done += len(batch)
                    continue
                row_of = np.empty(len(lengths), dtype=np.int64)
                row_of[batch] = np.arange(len(batch))
                try:
                    windows = [documents.tokens[w][: lengths[w]] for w in batch]
                    loss = self._batch(model, windows, row_of[window[samples]], position[samples], targets[samples])
                except Exception as e:
                    if not is_out_of_memory(e) or self.batch_size == 1:
                        raise
                    new = max(1, self.batch_size // 2)
                    warnings.warn(f"out of memory at batch size {self.batch_size}; continuing with {new}", stacklevel=2)
                    self.batch_size = new
                    if self.device.startswith("cuda"):
                        torch.cuda.empty_cache()
                    continue
                out[samples] = loss
                done += len(batch)
        return out

    def _autocast(self):
        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batch(self, model, windows: list[np.ndarray], rows: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Losses of ``targets``, the tokens at (rows, positions) of one batch of windows (right-padded with token 0;
        a window may end before its target, since only the tokens before a target are inputs)."""
        import torch
        import torch.nn.functional as F

        width = max(len(t) for t in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        for i, t in enumerate(windows):
            ids[i, : len(t)] = t
        ids_t = torch.from_numpy(ids).to(self.device)
        rows_t = torch.from_numpy(rows).to(self.device)
        pos_t = torch.from_numpy(positions).to(self.device)
        with self._autocast():
            # the base model applies the final layer norm; Float[Tensor, "batch seq d_model"]
            hidden = model.base_model(input_ids=ids_t, use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        # the hidden state at position - 1 predicts the token at position; Float[Tensor, "n_targets d_model"]
        h = hidden[rows_t, pos_t - 1].to(head.weight.dtype)
        targets = torch.from_numpy(targets).to(self.device)
        vocab = head.weight.shape[0]
        chunk = max(1, self.chunk_elements // vocab)
        out = torch.empty(len(rows), dtype=torch.float32, device=self.device)
        for i in range(0, len(rows), chunk):
            logits = head(h[i : i + chunk]).float()  # Float[Tensor, "chunk vocab"]
            out[i : i + chunk] = F.cross_entropy(logits, targets[i : i + chunk], reduction="none")
        return out.cpu().numpy()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n) with 0 <= i < n: this process does every n-th (run, step) task starting at the i-th."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def _write_frame(path, frame: pl.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=False)


def _hub_cache() -> str:
    """The Hugging Face cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), read at call time."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _in_hub_cache(repo: str, revision: str) -> bool:
    """True if ``repo@revision`` is already in the Hugging Face cache (or comes from ``$BOOK_HUB_MIRROR``, which is
    not the cache and is never dropped from)."""
    if os.environ.get("BOOK_HUB_MIRROR"):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision, cache_dir=_hub_cache()), str)
    except Exception:
        return True  # when in doubt, keep it


def _drop_hub_revision(repo: str, revision: str) -> None:
    """Free the disk space of one hub revision (after its losses are written). A snapshot that another ref (such as
    ``main``, which is Pythia's ``step143000``) also points to is kept."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir(_hub_cache())
        commits = [
            rev.commit_hash
            for info in cache.repos
            if info.repo_id == repo
            for rev in info.revisions
            if revision in rev.refs and not (set(rev.refs) - {revision})
        ]
        if commits:
            cache.delete_revisions(*commits).execute()
    except Exception as e:  # the cache is an optimisation; never fail an extraction over it
        warnings.warn(f"could not drop the cache of {repo}@{revision}: {e}", stacklevel=2)


def extract(
    suite_name,
    runs: list[str] | None = None,
    steps: list[int] | None = None,
    mode: str = "every_k",
    split: str = "test",
    n_samples: int = 10_000,
    n_documents: int | None = None,
    context: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    validation: bool = True,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    root=None,
    drop_cache: bool | None = None,
) -> LossTable:
    """Compute and store the losses of ``runs`` (default all) at ``steps`` (default all) of a suite; skip what is
    already on disk. Returns the :class:`~helpers.losses.LossTable` of these runs and steps.

    mode/split/n_samples/n_documents/context: which targets (see :func:`helpers.samples.make_samples`);
    validation: also the mean loss over all positions of the validation split per step; shard: ``"i/n"``, this
    process does tasks i, i+n, ...; root: the losses folder (default ``<data>/losses``); drop_cache (hub suites):
    once a revision's losses are written, delete it from the HF cache if this extraction downloaded it (None, the
    default), always (True) or never (False).

    Raises :class:`ExtractionError` (one line per failed run/step) after doing everything else it could.
    """
    if mode not in MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; valid: {list(MODES)}")
    suite = load_suite(suite_name) if isinstance(suite_name, str) else suite_name
    engine = Engine(device, precision, batch_size)
    layout = make_layout(suite, mode, split, n_samples, n_documents, context, engine.device.split(":")[0], engine.precision, root)
    table = LossTable.select(layout, runs, steps)

    tasks = [(run, s) for run in table.runs for s in table.wanted_steps[run]]
    shard = parse_shard(shard) if isinstance(shard, (str, type(None))) else shard
    if shard is not None:
        tasks = tasks[shard[0] :: shard[1]]
    todo = [
        (run, s)
        for run, s in tasks
        if not _complete(layout.loss_file(run, s)) or (validation and not _complete(layout.validation_file(run, s)))
    ]
    documents = tokenize_split(suite, split, layout.settings["context"], n_documents)
    window, position, k = select_targets(documents, mode, n_samples)
    _write_samples(layout, documents, window, position, k, suite)
    if not todo:
        return table
    val_docs = val_window = val_position = None
    if validation:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            val_docs = tokenize_split(suite, "validation", layout.settings["context"])
        val_window, val_position, _ = select_targets(val_docs, "all_positions")
    for folder in {layout.loss_file(r, s).parent for r, s in todo} | {layout.validation_file(r, s).parent for r, s in todo}:
        clean_stale_temporaries(folder)

    errors = run_tasks(suite, layout, todo, engine, documents, window, position, val_docs, val_window, val_position, progress, drop_cache)
    if errors:
        raise ExtractionError("\n".join(errors))
    return table


def _complete(path) -> bool:
    """True if ``path`` is a readable parquet file. A damaged one (only disk damage makes one: writes are atomic) is
    removed with a warning, so that it is computed again rather than read."""
    if not path.exists():
        return False
    try:
        import pyarrow.parquet as pq

        pq.read_metadata(path)
        return True
    except Exception:
        warnings.warn(f"{path} is damaged: computing it again", stacklevel=3)
        path.unlink(missing_ok=True)
        return False


def _write_samples(layout: Layout, documents, window, position, k, suite) -> None:
    if not (layout.folder / "settings.json").exists():
        write_json(layout.folder / "settings.json", layout.settings)
    if not layout.validation_folder.joinpath("settings.json").exists():
        write_json(layout.validation_folder / "settings.json", layout.validation_settings)
    if _complete(layout.samples_file):
        import pyarrow.parquet as pq

        rows = pq.read_metadata(layout.samples_file).num_rows
        if rows != len(window):
            raise SamplesError(f"samples table {layout.samples_file} has {rows:,} samples but these settings select "
                               f"{len(window):,}: the corpus or tokenizer changed under it; delete {layout.folder} to start over")
    else:
        _write_frame(layout.samples_file, samples_frame(documents, window, position, k, suite.tokenizer()))


def _load(suite, run: str, step: int, device: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, _ = suite.load(run, step, device=device)
    return model


def _prepare(suite, run: str, step: int, device: str, load: bool):
    """``(model or None, downloaded)``: fetch (hub) and verify (local sha256) a checkpoint, and load it if ``load``.
    ``downloaded`` is True when this call put a hub revision into the HF cache."""
    r = suite.run(run)
    downloaded = getattr(suite, "kind", "") == "hub" and not _in_hub_cache(r.source, r.revisions[step])
    if not load:
        suite.checkpoint_dir(r, step)  # I/O only, no torch ops
        return None, downloaded
    return _load(suite, run, step, device), downloaded


def run_tasks(suite, layout, todo, engine, documents, window, position, val_docs, val_window, val_position, progress, drop_cache) -> list[str]:
    """Compute and write each (run, step) of ``todo``, loading the next checkpoint while the current computes.
    Returns one error line per failed task."""
    from tqdm import tqdm

    errors: list[str] = []
    delay = float(os.environ.get("BOOK_EXTRACT_DELAY", "0"))  # seconds to pause after each step (tests kill part-way)
    tokens = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"{suite.name} losses", unit="ckpt", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-loader") as pool:
        futures = {}

        # On CUDA the next checkpoint is fetched and loaded on the background thread. On CPU only fetched: torch ops
        # on a second thread fight the compute threads for the cores (measured 6x slower on 2 cores), and loading a
        # fetched checkpoint takes milliseconds.
        on_cpu = engine.device == "cpu"

        def prefetch(i: int) -> None:
            if i < len(todo) and i not in futures:
                run, step = todo[i]
                futures[i] = pool.submit(_prepare, suite, run, step, engine.device, not on_cpu)

        prefetch(0)
        for i, (run, step) in enumerate(todo):
            try:
                model, downloaded = futures.pop(i).result()
                if model is None:
                    model = _load(suite, run, step, engine.device)
            except SuiteError as e:
                errors.append(f"{run} step {step}: {e}")
                bar.write(f"error: {errors[-1]}", file=sys.stderr)
                bar.update(1)
                if i + 1 == GIVE_UP_AFTER and len(errors) == GIVE_UP_AFTER and str(e).startswith("cannot fetch"):
                    errors.append(f"stopped after the first {GIVE_UP_AFTER} checkpoints could not be fetched: is the "
                                  "Hugging Face hub reachable from here?")
                    break
                prefetch(i + 1)
                continue
            prefetch(i + 1)  # the next checkpoint loads while this one computes
            try:
                if not layout.loss_file(run, step).exists():
                    loss = engine.losses(model, documents, window, position)
                    tokens += engine.last_tokens
                    bad = int((~np.isfinite(loss)).sum())
                    if bad:
                        raise FloatingPointError(f"{bad} of {len(loss)} sampled losses are NaN or infinite; not written")
                    _write_frame(
                        layout.loss_file(run, step),
                        pl.DataFrame(
                            {"run": [run] * len(loss), "step": np.full(len(loss), step, dtype=np.int64),
                             "sample_id": np.arange(len(loss), dtype=np.int64), "loss": loss},
                            schema=dict(run=pl.String, step=pl.Int64, sample_id=pl.Int64, loss=pl.Float32),
                        ),
                    )
                if val_docs is not None and not layout.validation_file(run, step).exists():
                    vloss = engine.losses(model, val_docs, val_window, val_position)
                    tokens += engine.last_tokens
                    bad = int((~np.isfinite(vloss)).sum())
                    if bad:
                        raise FloatingPointError(f"{bad} of {len(vloss)} validation losses are NaN or infinite; not written")
                    _write_frame(
                        layout.validation_file(run, step),
                        pl.DataFrame({"run": [run], "step": [step], "loss": [float(vloss.astype(np.float64).mean())], "tokens": [len(vloss)]},
                                     schema=dict(run=pl.String, step=pl.Int64, loss=pl.Float64, tokens=pl.Int64)),
                    )
            except FloatingPointError as e:
                errors.append(f"{run} step {step}: {e}")
                bar.write(f"error: {errors[-1]}", file=sys.stderr)
            finally:
                del model
            if getattr(suite, "kind", "") == "hub" and (drop_cache or (drop_cache is None and downloaded)):
                r = suite.run(run)
                _drop_hub_revision(r.source, r.revisions[step])
            with lock:
                bar.update(1)
                bar.set_postfix_str(f"{tokens / (time.perf_counter() - t0):,.0f} tok/s, {len(todo) - i - 1} steps left")
            if delay:
                time.sleep(delay)
    bar.close()
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=None, help="suite name (default: $BOOK_SUITE or pico)")
    parser.add_argument("--runs", nargs="+", help="only these runs (default: all)")
    parser.add_argument("--steps", nargs="+", type=int, help="only these steps (default: all)")
    parser.add_argument("--mode", default="every_k", choices=MODES, help="every_k (Michaud sampling) or all_positions")
    parser.add_argument("--split", default="test", help="corpus split of the sampled targets (default: test)")
    parser.add_argument("--n-samples", type=int, default=10_000, help="every_k: about this many samples (default 10000)")
    parser.add_argument("--n-documents", type=int, help="only the first N documents of the split")
    parser.add_argument("--context", type=int, help="cap the context (default: the model's; Michaud used 1024)")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: 4096 tokens on CPU, 32768 on CUDA)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--no-validation", action="store_true", help="skip the validation loss per step")
    parser.add_argument("--shard", help="i/n: do every n-th (run, step) starting at the i-th (0-based)")
    parser.add_argument("--out", help="losses folder (default: <data>/losses)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--drop-cache", dest="drop_cache", action="store_const", const=True, default=None,
                       help="hub suites: delete every revision from the HF cache once its losses are written "
                            "(default: only the revisions this extraction downloaded)")
    cache.add_argument("--keep-cache", dest="drop_cache", action="store_const", const=False,
                       help="hub suites: keep every downloaded revision in the HF cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from .paths import book_suite

    try:
        t0 = time.time()
        table = extract(
            args.suite or book_suite(), runs=args.runs, steps=args.steps, mode=args.mode, split=args.split,
            n_samples=args.n_samples, n_documents=args.n_documents, context=args.context, batch_size=args.batch_size,
            device=args.device, precision=args.precision, validation=not args.no_validation, shard=args.shard,
            progress=not args.quiet, root=args.out, drop_cache=args.drop_cache,
        )
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except ExtractionError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    except (SuiteError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {e.filename or 'the loss table'}: {e.strerror or e} (set BOOK_DATA or --out to a "
              "writable folder)", file=sys.stderr)
        return 2
    done = sum(len(table.steps(r)) for r in table.runs)
    print(json.dumps({"folder": str(table.folder), "samples": table.n_samples, "files": done, "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
