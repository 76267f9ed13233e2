"""Train every run of a local suite with the Pythia recipe and save its checkpoints.

    python -m helpers.train --suite pico [--runs pico-0.6m ...] [--workers 2]

Each run writes ``<data>/suites/<suite>/<run>/step<N>/`` (config.json + model.safetensors, loadable with
``AutoModelForCausalLM.from_pretrained``) at every scheduled step, ``train_log.parquet`` (loss per step) and
``run.json`` (sha256 per checkpoint); the suite gets ``suite.json`` and ``tokenizer.json``. Every write is atomic and
an interrupted suite resumes: finished runs are kept, an unfinished run continues from its last checkpoint with the
same optimiser state and batch order, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .atomic import atomic_path, clean_stale_temporaries, sha256_file, write_json
from .corpus import build_corpus, load_documents
from .paths import cache_dir, suite_dir
from .recipes import RECIPES, Recipe, RunSpec, count_parameters
from .suites import WEIGHTS_FILE, SuiteError
from .tokenizer import END_OF_TEXT, load_tokenizer, train_tokenizer, write_tokenizer_config


TRAIN_THREADS = 1  # torch threads per run: the sum order of a matmul depends on it, and a resumed run (alone, or in a
# pool of workers) must be bit-identical to an uninterrupted one; runs train in parallel processes instead


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise SuiteError(f"unknown suite {name!r} to train; valid: {list(RECIPES)}")
    return RECIPES[name]


# ---- data ---------------------------------------------------------------------------------------------------------


def prepare_data(recipe: Recipe) -> tuple[Path, Path]:
    """Build the corpus, the suite's tokenizer and the tokenized train stream; return (tokenizer, tokens) paths.

    The stream is every train document followed by ``<|endoftext|>``, in corpus order, as uint16 token ids.
    """
    build_corpus(recipe.corpus)
    root = suite_dir(recipe.name)
    tok_path = root / "tokenizer.json"
    train = load_documents(recipe.corpus, "train")["text"].to_list()
    if tok_path.exists() and not _loads(tok_path):
        warnings.warn(f"{tok_path} is corrupt: training the tokenizer again (deterministic: the same tokenizer)", stacklevel=2)
        tok_path.unlink()
    if not tok_path.exists():
        texts = train
        if recipe.tokenizer_chars is not None:
            texts, total = [], 0
            for t in train:
                texts.append(t)
                total += len(t)
                if total >= recipe.tokenizer_chars:
                    break
        train_tokenizer(texts, recipe.vocab_size, tok_path)
    if not (root / "tokenizer_config.json").exists():
        write_tokenizer_config(root)
    tokens_path = cache_dir() / f"{recipe.name}-train-tokens-{sha256_file(tok_path)[:12]}.npy"
    if tokens_path.exists() and not _loads(tokens_path):
        tokens_path.unlink()  # a corrupt cache: tokenize again
    if not tokens_path.exists():
        tokenizer = load_tokenizer(tok_path)
        eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        ids = tokenizer(train, add_special_tokens=False)["input_ids"]
        stream = np.fromiter(itertools.chain.from_iterable(d + [eot] for d in ids), dtype=np.uint16)
        with atomic_path(tokens_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, stream)
    return tok_path, tokens_path


def _loads(path: Path) -> bool:
    """True if the tokenizer (.json) or token stream (.npy) at ``path`` can be read."""
    try:
        if path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        else:
            load_tokenizer(path)
        return True
    except Exception:
        return False


class BatchOrder:
    """The batches of a run: the stream cut into ``context``-token sequences, shuffled per epoch by ``data_seed``.

    ``batch(step)`` is the [batch_size, context] int64 array of update ``step`` (0-based); it depends only on the
    step, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, stream: np.ndarray, context: int, batch_size: int, data_seed: int):
        n = len(stream) // context
        if n < batch_size:
            raise ValueError(f"the train stream has {n} sequences, fewer than one batch ({batch_size})")
        self.sequences = stream[: n * context].reshape(n, context)
        self.batch_size = batch_size
        self.data_seed = data_seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders[epoch] = np.random.default_rng([self.data_seed, epoch]).permutation(len(self.sequences))
        return self._orders[epoch]

    def batch(self, step: int) -> np.ndarray:
        n = len(self.sequences)
        idx = [step * self.batch_size + i for i in range(self.batch_size)]
        rows = [self._order(i // n)[i % n] for i in idx]
        return self.sequences[rows].astype(np.int64)


def learning_rate(recipe: Recipe, step: int) -> float:
    """Pythia's schedule for update ``step`` (0-based): linear warm-up over 1%, cosine decay to 10% of peak."""
    warmup = max(1, round(recipe.warmup_fraction * recipe.total_steps))
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.total_steps - warmup)
    floor = recipe.final_lr_fraction
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- one run ------------------------------------------------------------------------------------------------------


def build_model(recipe: Recipe, spec: RunSpec):
    """A freshly initialised GPTNeoXForCausalLM for ``spec`` (initialisation depends on ``spec.seed`` only)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(spec.seed)
    return GPTNeoXForCausalLM(recipe.model_config(spec.size))


def make_optimizer(recipe: Recipe, model):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)


def train_run(recipe: Recipe, spec: RunSpec, tokens_path: Path, progress=None, threads: int | None = None) -> dict:
    """Train one run, resuming from its last checkpoint; return its ``run.json`` record.

    ``progress``: a mapping (a plain dict, or a ``multiprocessing.Manager`` dict shared with the parent) where
    ``progress[run name]`` is set to the number of updates done after each update.
    """
    import torch

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    started = time.time()
    run_dir = suite_dir(recipe.name) / spec.name
    record_path = run_dir / "run.json"
    if _is_complete(run_dir):
        if progress is not None:
            progress[spec.name] = recipe.total_steps
        return json.loads(record_path.read_text())
    clean_stale_temporaries(run_dir)
    batches = BatchOrder(np.load(tokens_path), recipe.context, recipe.batch_size, spec.data_seed)
    model = build_model(recipe, spec)
    optimizer = make_optimizer(recipe, model)
    schedule = set(recipe.steps)
    start, log, sha = 0, {"step": [], "loss": [], "lr": []}, {}
    state_path = run_dir / "resume.pt"
    if state_path.exists():
        try:
            state = torch.load(state_path, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, log, sha = state["step"], state["log"], state["sha256"]
        except Exception as e:  # training is deterministic: starting over gives the same run
            warnings.warn(f"{state_path} is unreadable ({type(e).__name__}): training {spec.name} from step 0", stacklevel=2)
            model = build_model(recipe, spec)
            optimizer = make_optimizer(recipe, model)

    def checkpoint(step: int) -> None:
        folder = run_dir / f"step{step}"
        with atomic_path(folder) as tmp:
            model.save_pretrained(tmp)
        sha[step] = sha256_file(folder / WEIGHTS_FILE)
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "log": log, "sha256": sha}, tmp)
        with atomic_path(run_dir / "train_log.parquet") as tmp:
            _log_frame(log, recipe.tokens_per_step).write_parquet(tmp)

    if start == 0 and 0 not in sha:
        checkpoint(0)
    model.train()
    for step in range(start, recipe.total_steps):
        lr = learning_rate(recipe, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(batches.batch(step))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log["step"].append(step + 1)
        log["loss"].append(loss.item())
        log["lr"].append(lr)
        if step + 1 in schedule:
            checkpoint(step + 1)
        if progress is not None:
            progress[spec.name] = step + 1
    total, non_embedding = count_parameters(spec.size.n_layer, spec.size.d_model, recipe.vocab_size)
    record = {
        "name": spec.name,
        "size": spec.size.label,
        "params": total,
        "non_embedding_params": non_embedding,
        "seed": spec.seed,
        "data_seed": spec.data_seed,
        "steps": recipe.steps,
        "tokens_per_step": recipe.tokens_per_step,
        "sha256": {str(k): sha[k] for k in sorted(sha)},
        "final_train_loss": float(np.mean(log["loss"][-20:])),
        "train_seconds": round(time.time() - started, 1),  # of this session (a resumed run counts its last part)
        "complete": True,
    }
    write_json(record_path, record)
    state_path.unlink(missing_ok=True)
    return record


def _log_frame(log: dict, tokens_per_step: int):
    import polars as pl

    return pl.DataFrame(
        {"step": log["step"], "loss": log["loss"], "lr": log["lr"]},
        schema={"step": pl.Int64, "loss": pl.Float32, "lr": pl.Float64},
    ).with_columns(tokens=pl.col("step") * tokens_per_step)


# ---- the suite ----------------------------------------------------------------------------------------------------


def estimated_cost(recipe: Recipe, spec: RunSpec) -> float:
    """Relative CPU time of a run: tokens x (training FLOPs per token + a fixed per-token overhead)."""
    total, non_embedding = count_parameters(spec.size.n_layer, spec.size.d_model, recipe.vocab_size)
    flops = 6 * total + 12 * spec.size.n_layer * recipe.context * spec.size.d_model
    return recipe.total_steps * recipe.tokens_per_step * (flops + 3e6)


def partition(costs: list[float], workers: int) -> list[list[int]]:
    """Assign jobs to workers to minimise the longest worker's total (exhaustive for <= 12 jobs, else greedy)."""
    n = len(costs)
    if workers <= 1 or n <= 1:
        return [list(range(n))]
    best, best_span = None, float("inf")
    if n <= 12:
        for assign in itertools.product(range(workers), repeat=n - 1):
            assign = (0,) + assign
            loads = [0.0] * workers
            for j, w in enumerate(assign):
                loads[w] += costs[j]
            if max(loads) < best_span:
                best, best_span = assign, max(loads)
    else:
        loads = [0.0] * workers
        best = [0] * n
        for j in sorted(range(n), key=lambda j: -costs[j]):
            w = loads.index(min(loads))
            best[j] = w
            loads[w] += costs[j]
    groups = [[j for j in range(n) if best[j] == w] for w in range(workers)]
    return [sorted(g, key=lambda j: -costs[j]) for g in groups if g]


def _worker(recipe_name: str, specs: list[RunSpec], tokens_path: str, progress, threads: int, data_root: str):
    os.environ["BOOK_DATA"] = data_root
    recipe = get_recipe(recipe_name)
    return [train_run(recipe, s, Path(tokens_path), progress=progress, threads=threads) for s in specs]


class _SuiteProgress(dict):
    """Updates done per run -> one progress bar for the whole suite (tokens, tokens/s, runs finished)."""

    def __init__(self, recipe: Recipe, specs: list[RunSpec], finished: list[str], show: bool):
        super().__init__({run: recipe.total_steps for run in finished})
        from tqdm.auto import tqdm

        self.recipe, self.n_runs = recipe, len(specs)
        self.bar = tqdm(total=len(specs) * recipe.total_steps * recipe.tokens_per_step, desc=f"training {recipe.name}",
                        initial=len(finished) * recipe.total_steps * recipe.tokens_per_step, unit="tok", unit_scale=True,
                        dynamic_ncols=True, mininterval=1.0, disable=not show)
        self.bar.set_postfix_str(f"{len(finished)}/{self.n_runs} runs done")

    def refresh(self, done: dict) -> None:
        tokens = sum(done.values()) * self.recipe.tokens_per_step
        if tokens > self.bar.n:
            finished = sum(v >= self.recipe.total_steps for v in done.values())
            self.bar.set_postfix_str(f"{finished}/{self.n_runs} runs done", refresh=False)
            self.bar.update(tokens - self.bar.n)

    def __setitem__(self, run: str, steps: int) -> None:  # the single-process path reports here directly
        super().__setitem__(run, steps)
        self.refresh(self)


def train_suite(name: str, runs: list[str] | None = None, workers: int | None = None, progress: bool | None = None) -> Path:
    """Train (or resume) the runs of suite ``name``; write ``suite.json``; return its path.

    ``workers`` single-thread processes share the runs (default: up to 2); ``progress``: show one bar for the suite
    (default: yes, except while the book is being built, where a bar would be a dead widget).
    """
    from .figures import in_book_build

    recipe = get_recipe(name)
    specs = recipe.runs()
    if runs:
        known = {s.name: s for s in specs}
        unknown = [r for r in runs if r not in known]
        if unknown:
            raise SuiteError(f"unknown run {unknown[0]!r} in suite {name!r}; valid: {list(known)}")
        specs = [known[r] for r in dict.fromkeys(runs)]
    root = suite_dir(name)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(root)
    _, tokens_path = prepare_data(recipe)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    finished = []
    for spec in specs:
        if _is_complete(root / spec.name):
            broken = broken_checkpoints(root / spec.name)
            if not broken:
                finished.append(spec.name)
                continue
            # training is deterministic: the run is trained again and every checkpoint comes back identical
            warnings.warn(f"{spec.name}: checkpoint step{broken[0]} is missing or corrupt"
                          f"{f' (and {len(broken) - 1} more)' if len(broken) > 1 else ''}: training the run again", stacklevel=2)
            (root / spec.name / "run.json").unlink()
    bar = _SuiteProgress(recipe, specs, finished, show=not in_book_build() if progress is None else progress)
    specs = [s for s in specs if s.name not in finished]
    workers = min(workers or 2, len(specs), os.cpu_count() or 1) if specs else 1
    groups = partition([estimated_cost(recipe, s) for s in specs], workers) if specs else []
    try:
        if not groups:
            pass  # every run is trained already
        elif len(groups) == 1:
            _worker(name, [specs[j] for j in groups[0]], str(tokens_path), bar, TRAIN_THREADS, str(_data_root()))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Manager() as manager, ctx.Pool(len(groups)) as pool:
                done = manager.dict()
                jobs = [
                    pool.apply_async(_worker, (name, [specs[j] for j in g], str(tokens_path), done, TRAIN_THREADS, str(_data_root())))
                    for g in groups
                ]
                while not all(job.ready() for job in jobs):
                    bar.refresh(dict(done))
                    time.sleep(1.0)
                for job in jobs:
                    job.get()  # re-raises a worker's error
                bar.refresh(dict(done))
    finally:
        bar.bar.close()
    return write_suite_json(recipe)


def _is_complete(run_dir: Path) -> bool:
    """True if the run's ``run.json`` says it finished (an unreadable one counts as unfinished)."""
    path = run_dir / "run.json"
    try:
        return path.exists() and bool(json.loads(path.read_text()).get("complete"))
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def broken_checkpoints(run_dir: Path) -> list[int]:
    """Steps of a finished run whose checkpoint is missing or differs from the sha256 in its ``run.json``."""
    record = json.loads((run_dir / "run.json").read_text())
    broken = []
    for step, digest in record["sha256"].items():
        folder = run_dir / f"step{step}"
        weights = folder / WEIGHTS_FILE
        if not (folder / "config.json").exists() or not weights.exists() or sha256_file(weights) != digest:
            broken.append(int(step))
    return broken


def ensure_suite(name: str):
    """The suite ``name``, training it first if it is a local suite that is not trained yet (hub suites load lazily)."""
    from .suites import load_suite

    if name in RECIPES:
        root = suite_dir(name)
        recipe = RECIPES[name]
        done = all(_is_complete(root / r.name) for r in recipe.runs())
        if not done or not (root / "suite.json").exists():
            train_suite(name)
    return load_suite(name)


def _data_root() -> Path:
    from .paths import data_root

    return data_root()


def write_suite_json(recipe: Recipe) -> Path:
    """Collect the finished runs' records into ``suite.json`` (runs in recipe order)."""
    root = suite_dir(recipe.name)
    runs = []
    for spec in recipe.runs():
        path = root / spec.name / "run.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("complete"):
                runs.append({k: v for k, v in record.items() if k != "complete"})
    recipe_fields = {k: v for k, v in asdict(recipe).items() if k not in ("sizes", "extra_seeds")}
    meta = {
        "name": recipe.name,
        "description": f"GPT-NeoX (Pythia recipe) runs trained on {recipe.corpus}",
        "corpus": recipe.corpus,
        "corpus_sha256": json.loads((_data_root() / "corpus" / recipe.corpus / "manifest.json").read_text())["sha256"],
        "tokenizer": "tokenizer.json",
        "context": recipe.context,
        "recipe": recipe_fields,
        "runs": runs,
    }
    path = root / "suite.json"
    try:
        unchanged = json.loads(path.read_text()) == meta
    except (OSError, json.JSONDecodeError):
        unchanged = False
    if not unchanged:  # a finished suite on a read-only data root stays usable
        write_json(path, meta)
    return path


def main(argv: list[str] | None = None) -> int:
    from .paths import book_suite

    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=None, help=f"one of {list(RECIPES)} (default: $BOOK_SUITE or pico)")
    parser.add_argument("--runs", nargs="+", help="train only these runs")
    parser.add_argument("--workers", type=int, help="parallel single-thread processes (default: min(2, cores))")
    args = parser.parse_args(argv)
    name = args.suite or book_suite()
    t0 = time.time()
    try:
        if name not in RECIPES:
            from .suites import load_suite

            load_suite(name)  # a hub suite is trained already; anything else is an unknown name (one line)
            print(f"{name} is a hub suite: nothing to train")
            return 0
        path = train_suite(name, args.runs, args.workers)
    except KeyboardInterrupt:
        print(f"interrupted: finished checkpoints are kept; rerun `python -m helpers.train --suite {name}` to resume",
              file=sys.stderr)
        return 130
    except (SuiteError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {e.filename or 'to the data root'}: {e.strerror or e} (set BOOK_DATA to a writable folder)",
              file=sys.stderr)
        return 2
    print(f"{path} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
