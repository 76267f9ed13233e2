"""The suite registry: list a suite's runs and load ``(model, tokenizer)`` for any ``(run, step)``.

One API for the suites we train (``nano``, ``pico``; read from ``<data>/suites/<suite>/suite.json``) and for suites on
the Hugging Face hub (Pythia and any repo with an explicit list of revisions)::

    suite = load_suite("pico")                      # or "pythia-small", "pythia-160m-seeds", "crfm-gpt2-small"
    suite.table()                                   # polars: run, size, params, seed, steps, ...
    model, tokenizer = suite.load("pico-0.6m", 256)  # step 256, CPU, fp32

Hub suites load ``AutoModelForCausalLM.from_pretrained(repo, revision=...)``. With ``$BOOK_HUB_MIRROR`` set they load
from ``$BOOK_HUB_MIRROR/<repo>/<revision>/`` instead (a pre-downloaded copy, or a stand-in repo in tests).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from .atomic import sha256_file
from .paths import suite_dir
from .recipes import DEFAULT_SEED, RECIPES, count_parameters
from .schedule import PYTHIA_CHECKPOINTS, PYTHIA_KNOWN_ISSUES, PYTHIA_TOKENS_PER_STEP

WEIGHTS_FILE = "model.safetensors"


class SuiteError(ValueError):
    """Unknown suite, run or step, or a missing/corrupt checkpoint. The message is one line."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line (whitespace collapsed, at most ``limit`` characters), or its type's name."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


class DuplicateCheckpointWarning(UserWarning):
    """A loaded checkpoint has the same weights as another step of the same run."""


@dataclass
class Run:
    """One training run: its checkpoints and where to load them from."""

    name: str  # e.g. "pico-0.6m-seed1", "pythia-160m"
    size: str  # size label, e.g. "0.6m", "160m"
    params: int  # total parameters
    non_embedding_params: int
    seed: int  # weight-initialisation seed
    data_seed: int | None  # batch-order seed (None where the data order is not separately seeded)
    steps: list[int]  # checkpoint steps, increasing
    tokens_per_step: int
    source: str  # local run directory, or hub repo id
    revisions: dict[int, str] = field(default_factory=dict)  # hub: step -> revision name
    sha256: dict[int, str] = field(default_factory=dict)  # step -> sha256 of the weights file (local suites)

    def tokens_seen(self, step: int) -> int:
        return step * self.tokens_per_step

    def check_step(self, step) -> int:
        """``step`` as an int if this run has a checkpoint there (``8``, ``"8"`` and ``8.0`` all mean step 8)."""
        try:
            as_int = int(step)
            if as_int != float(step):
                raise ValueError
        except (TypeError, ValueError):
            raise SuiteError(f"a step is a whole number of updates, got {step!r}") from None
        step = as_int
        if step not in self.steps:
            shown = self.steps if len(self.steps) <= 12 else self.steps[:6] + ["..."] + self.steps[-3:]
            raise SuiteError(f"run {self.name!r} has no checkpoint at step {step}; steps: {shown}")
        return step


DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


def parse_dtype(dtype):
    """A torch dtype from a torch dtype, one of :data:`DTYPES`' names, or None (fp32)."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return getattr(torch, DTYPES[dtype.lower()])
    raise SuiteError(f"unknown dtype {dtype!r}; valid: a torch dtype or one of {sorted(set(DTYPES))}")


class Suite:
    """A named set of runs, each with ordered checkpoint steps."""

    kind = "abstract"

    def __init__(self, name: str, runs: list[Run], description: str = ""):
        self.name = name
        self.runs = runs
        self.description = description
        self._seen_weights: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, runs={self.run_names})"

    @property
    def run_names(self) -> list[str]:
        return [r.name for r in self.runs]

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise SuiteError(f"unknown run {name!r} in suite {self.name!r}; valid: {self.run_names}")

    def select(self, names: list[str] | str | None) -> list[Run]:
        """The runs named (one name, a list, or None for all runs), with a one-line error for an unknown name."""
        if names is None:
            return list(self.runs)
        if isinstance(names, str):
            names = [names]
        return [self.run(n) for n in dict.fromkeys(names)]

    def table(self) -> pl.DataFrame:
        """One row per run: run, size, params, non_embedding_params, seed, data_seed, checkpoints, steps, tokens."""
        return pl.DataFrame(
            {
                "run": [r.name for r in self.runs],
                "size": [r.size for r in self.runs],
                "params": [r.params for r in self.runs],
                "non_embedding_params": [r.non_embedding_params for r in self.runs],
                "seed": [r.seed for r in self.runs],
                "data_seed": [r.data_seed for r in self.runs],
                "checkpoints": [len(r.steps) for r in self.runs],
                "final_step": [r.steps[-1] for r in self.runs],
                "tokens_per_step": [r.tokens_per_step for r in self.runs],
                "tokens_seen": [r.tokens_seen(r.steps[-1]) for r in self.runs],
            },
            schema_overrides={"data_seed": pl.Int64},
        )

    def load(self, run: str, step: int, device: str = "cpu", dtype=None):
        """``(model, tokenizer)`` of ``run`` at ``step``, in eval mode on ``device``.

        dtype: a torch dtype or one of ``"fp32"`` (default), ``"bf16"``, ``"fp16"``. Raises :class:`SuiteError` (one
        line) for an unknown run or step, a missing or corrupt checkpoint or tokenizer, or a tokenizer whose ids do
        not fit the model's vocabulary.
        """
        from transformers import AutoModelForCausalLM

        r = self.run(run)
        step = r.check_step(step)
        torch_dtype = parse_dtype(dtype)
        tokenizer = self.tokenizer()
        folder = self.checkpoint_dir(r, step)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per load would drown a notebook (and be a dead widget in the book)
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        except SuiteError:
            raise
        except Exception as e:  # transformers raises many types for a broken checkpoint
            raise SuiteError(f"cannot load {r.name} step {step} from {folder}: {one_line(e, 400)}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        vocab = model.get_output_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            raise SuiteError(f"the tokenizer of suite {self.name!r} has {len(tokenizer):,} tokens but {r.name} step {step} "
                             f"has a vocabulary of {vocab:,}: they do not belong together")
        self._warn_if_duplicate(r, step, self.weights_id(r, step, model))
        return model.to(device).eval(), tokenizer

    def _warn_if_duplicate(self, r: Run, step: int, weights_id: str) -> None:
        other = self._seen_weights.setdefault((r.name, weights_id), step)
        if other != step:
            warnings.warn(
                f"{r.name} step {step} has the same weights as step {other}", DuplicateCheckpointWarning, stacklevel=3
            )

    # implemented by subclasses
    def checkpoint_dir(self, r: Run, step: int) -> str: ...
    def weights_id(self, r: Run, step: int, model) -> str: ...
    def tokenizer(self): ...


class LocalSuite(Suite):
    """A suite we trained: ``<data>/suites/<name>/suite.json``, ``tokenizer.json``, ``<run>/step<N>/``."""

    kind = "local"

    def __init__(self, name: str, root: Path):
        self.root = root
        path = root / "suite.json"
        try:
            meta = json.loads(path.read_text())
            runs = [
                Run(
                    name=r["name"],
                    size=r["size"],
                    params=r["params"],
                    non_embedding_params=r["non_embedding_params"],
                    seed=r["seed"],
                    data_seed=r["data_seed"],
                    steps=[int(s) for s in r["steps"]],
                    tokens_per_step=r["tokens_per_step"],
                    source=str(root / r["name"]),
                    sha256={int(k): v for k, v in r["sha256"].items()},
                )
                for r in meta["runs"]
            ]
            int(meta["context"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            problem = f"missing {e}" if isinstance(e, KeyError) else one_line(e)
            raise SuiteError(f"suite file {path} is corrupt ({problem}): rerun `python -m helpers.train --suite {name}` "
                             "to rewrite it") from None
        super().__init__(name, runs, meta.get("description", ""))
        self.meta = meta
        self._tokenizer = None

    def training_log(self, runs: list[str] | None = None) -> pl.DataFrame:
        """Training loss of every update: columns run, step, tokens, loss (nats, mean over the batch), lr."""
        frames = []
        for r in self.select(runs):
            path = Path(r.source) / "train_log.parquet"
            if not path.exists():
                raise SuiteError(f"training log {path} is missing")
            frames.append(pl.read_parquet(path).select(pl.lit(r.name).alias("run"), "step", "tokens", "loss", "lr"))
        return pl.concat(frames)

    def checkpoint_dir(self, r: Run, step: int) -> str:
        folder = Path(r.source) / f"step{step}"
        weights = folder / WEIGHTS_FILE
        if not weights.exists():
            raise SuiteError(f"checkpoint file {weights} is missing")
        if not (folder / "config.json").exists():
            raise SuiteError(f"checkpoint file {folder / 'config.json'} is missing")
        expected = r.sha256.get(step)
        if expected and sha256_file(weights) != expected:
            raise SuiteError(f"checkpoint file {weights} is corrupt (sha256 differs from suite.json)")
        return str(folder)

    def weights_id(self, r: Run, step: int, model) -> str:
        return r.sha256.get(step) or sha256_file(Path(r.source) / f"step{step}" / WEIGHTS_FILE)

    def run(self, name: str) -> Run:
        try:
            return super().run(name)
        except SuiteError:
            recipe = RECIPES.get(self.name)
            if recipe is not None and name in [r.name for r in recipe.runs()]:
                raise SuiteError(f"run {name!r} of suite {self.name!r} is not trained yet: run "
                                 f"`python -m helpers.train --suite {self.name}`") from None
            raise

    def tokenizer(self):
        from .tokenizer import load_tokenizer

        if self._tokenizer is None:
            path = self.root / "tokenizer.json"
            if not path.exists():
                raise SuiteError(f"tokenizer file {path} is missing: rerun `python -m helpers.train --suite {self.name}`")
            try:
                self._tokenizer = load_tokenizer(path)
            except Exception as e:
                raise SuiteError(f"tokenizer file {path} is corrupt ({one_line(e, 200)}): rerun "
                                 f"`python -m helpers.train --suite {self.name}`") from None
        return self._tokenizer


HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]  # what a hub revision is fetched with (besides .bin)


def has_weights(folder) -> bool:
    """True if ``folder`` holds safetensors weights (a single file or shards)."""
    return any(Path(folder).glob("*.safetensors"))


class HubSuite(Suite):
    """Runs on the Hugging Face hub, one repo per run, one revision per step."""

    kind = "hub"

    def __init__(self, name: str, runs: list[Run], description: str = "", known_issues: dict[int, str] | None = None):
        super().__init__(name, runs, description)
        self.known_issues = known_issues or {}
        self._tokenizers: dict[str, object] = {}

    def checkpoint_dir(self, r: Run, step: int) -> str:
        revision = r.revisions[step]
        if step in self.known_issues:
            warnings.warn(f"{r.name} step {step}: {self.known_issues[step]}", DuplicateCheckpointWarning, stacklevel=3)
        mirror = os.environ.get("BOOK_HUB_MIRROR")
        if mirror:
            folder = Path(mirror) / r.source / revision
            if not folder.is_dir():
                raise SuiteError(f"checkpoint folder {folder} is missing from the hub mirror")
            return str(folder)
        from huggingface_hub import snapshot_download

        try:
            # safetensors when the revision has them; the .bin weights only where it has nothing else (many Pythia
            # revisions carry both, and fetching both would double the download)
            folder = snapshot_download(r.source, revision=revision, allow_patterns=HUB_FILES)
            if not has_weights(folder):
                folder = snapshot_download(r.source, revision=revision, allow_patterns=HUB_FILES + ["*.bin"])
            return folder
        except Exception as e:
            raise SuiteError(f"cannot fetch {r.source} revision {revision}: {type(e).__name__}: {one_line(e)}") from None

    def weights_id(self, r: Run, step: int, model) -> str:
        """A fingerprint of the weights: sha256 over the first 4,096 values of every parameter (cheap for 12B)."""
        import hashlib

        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in model.named_parameters():
                h.update(name.encode())
                h.update(p.detach().reshape(-1)[:4096].float().cpu().numpy().tobytes())
        return h.hexdigest()

    def tokenizer(self, run: str | None = None):
        """The tokenizer of ``run`` (default: the first run), from its last checkpoint (Pythia: the same at every step)."""
        from transformers import AutoTokenizer

        r = self.runs[0] if run is None else self.run(run)
        if r.source not in self._tokenizers:
            self._tokenizers[r.source] = self._from_last_checkpoint(AutoTokenizer, r, "the tokenizer")
        return self._tokenizers[r.source]

    def config(self, run: str | None = None):
        """The model config of ``run`` (default: the first run) at its last checkpoint."""
        from transformers import AutoConfig

        return self._from_last_checkpoint(AutoConfig, self.runs[0] if run is None else self.run(run), "the config")

    def _from_last_checkpoint(self, auto_class, r: Run, what: str):
        """``auto_class.from_pretrained`` at the run's last revision (from ``$BOOK_HUB_MIRROR`` when set); one-line error."""
        revision = r.revisions[r.steps[-1]]
        mirror = os.environ.get("BOOK_HUB_MIRROR")
        try:
            if mirror:
                return auto_class.from_pretrained(Path(mirror) / r.source / revision)
            return auto_class.from_pretrained(r.source, revision=revision)
        except Exception as e:
            raise SuiteError(f"cannot load {what} of {r.source} revision {revision}: {one_line(e)}") from None


# ---- Pythia -------------------------------------------------------------------------------------------------------

# (layers, d_model, heads) of each Pythia size; vocabulary 50,304 (50,688 for 12b).
PYTHIA_SIZES: dict[str, tuple[int, int, int]] = {
    "14m": (6, 128, 4),
    "31m": (6, 256, 8),
    "70m": (6, 512, 8),
    "160m": (12, 768, 12),
    "410m": (24, 1024, 16),
    "1b": (16, 2048, 8),
    "1.4b": (24, 2048, 16),
    "2.8b": (32, 2560, 32),
    "6.9b": (32, 4096, 32),
    "12b": (36, 5120, 40),
}
PYTHIA_SEED_SIZES = ("14m", "31m", "70m", "160m", "410m")  # sizes with -seed1 ... -seed9 runs
PYTHIA_RUN = re.compile(r"^pythia-(?P<size>[0-9.]+[mb])(?P<dedup>-deduped)?(?:-seed(?P<seed>[1-9]))?$")


def pythia_run(name: str) -> Run:
    """The :class:`Run` of a Pythia model named as on the hub, e.g. ``pythia-160m-deduped`` or ``pythia-70m-seed3``."""
    m = PYTHIA_RUN.match(name)
    if not m or m["size"] not in PYTHIA_SIZES or (m["seed"] and m["size"] not in PYTHIA_SEED_SIZES):
        raise SuiteError(
            f"unknown Pythia model {name!r}; valid: pythia-<size>[-deduped] with size in {list(PYTHIA_SIZES)}, "
            f"or pythia-<size>-seed<1-9> with size in {list(PYTHIA_SEED_SIZES)}"
        )
    n_layer, d_model, _ = PYTHIA_SIZES[m["size"]]
    params, non_embedding = count_parameters(n_layer, d_model, 50688 if m["size"] == "12b" else 50304)
    return Run(
        name=name,
        size=m["size"],
        params=params,
        non_embedding_params=non_embedding,
        seed=int(m["seed"]) if m["seed"] else DEFAULT_SEED,
        data_seed=None,  # a Pythia seed changes the initialisation and the data order (EleutherAI/pythia#142)
        steps=list(PYTHIA_CHECKPOINTS),
        tokens_per_step=PYTHIA_TOKENS_PER_STEP,
        source=f"EleutherAI/{name}",
        revisions={s: f"step{s}" for s in PYTHIA_CHECKPOINTS},
    )


def pythia_suite(name: str, run_names: list[str], description: str = "") -> HubSuite:
    return HubSuite(name, [pythia_run(n) for n in run_names], description, known_issues=PYTHIA_KNOWN_ISSUES)


# ---- Any hub repo with an explicit revision list --------------------------------------------------------------------

# Stanford CRFM's GPT-2 (Mistral) runs: 609 checkpoints, revision ``checkpoint-<N>``.
CRFM_GPT2_CHECKPOINTS: list[int] = (
    list(range(0, 100, 10)) + list(range(100, 2000, 50)) + list(range(2000, 20000, 100)) + list(range(20000, 400001, 1000))
)
CRFM_GPT2_SMALL = {  # run name -> repo; the suffix is the seed
    "alias-gpt2-small-x21": 21,
    "battlestar-gpt2-small-x49": 49,
    "caprica-gpt2-small-x81": 81,
    "darkmatter-gpt2-small-x343": 343,
    "expanse-gpt2-small-x777": 777,
}


def revision_suite(
    name: str,
    repos: dict[str, str],
    revisions: dict[int, str],
    size: str,
    params: int,
    non_embedding_params: int,
    tokens_per_step: int,
    seeds: dict[str, int] | None = None,
    description: str = "",
) -> HubSuite:
    """A hub suite from any repos sharing an explicit ``{step: revision}`` list (run name -> repo id)."""
    steps = sorted(revisions)
    runs = [
        Run(run, size, params, non_embedding_params, (seeds or {}).get(run, 0), None, steps, tokens_per_step, repo, dict(revisions))
        for run, repo in repos.items()
    ]
    return HubSuite(name, runs, description)


def _crfm_gpt2_small() -> HubSuite:
    return revision_suite(
        "crfm-gpt2-small",
        {run: f"stanford-crfm/{run}" for run in CRFM_GPT2_SMALL},
        {s: f"checkpoint-{s}" for s in CRFM_GPT2_CHECKPOINTS},
        size="124m",
        params=124_439_808,
        non_embedding_params=85_056_000,
        tokens_per_step=512 * 1024,
        seeds=CRFM_GPT2_SMALL,
        description="Stanford CRFM GPT-2 small, five seeds, 609 checkpoints (revision checkpoint-<N>)",
    )


# ---- Lookup -------------------------------------------------------------------------------------------------------

HUB_SUITES = {
    "pythia-small": lambda: pythia_suite(
        "pythia-small",
        ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-160m-seed1", "pythia-160m-seed2", "pythia-160m-seed3"],
        "Pythia 70m/160m/410m and three more seeds of 160m: the book's suite on a GPU",
    ),
    "pythia": lambda: pythia_suite("pythia", [f"pythia-{s}" for s in PYTHIA_SIZES], "every Pythia size"),
    "pythia-deduped": lambda: pythia_suite(
        "pythia-deduped", [f"pythia-{s}-deduped" for s in PYTHIA_SIZES], "every Pythia size, deduplicated Pile"
    ),
    "crfm-gpt2-small": _crfm_gpt2_small,
}
_SEEDS_SUITE = re.compile(r"^pythia-(?P<size>[0-9.]+m)-seeds$")


def suite_names() -> list[str]:
    """Names accepted by :func:`load_suite` (patterns in angle brackets)."""
    return list(RECIPES) + list(HUB_SUITES) + ["pythia-<size>[-deduped][-seed<k>]", "pythia-<size>-seeds"]


def load_suite(name: str) -> Suite:
    """The suite called ``name``: a local suite (trained), a named hub suite, or a Pythia model name."""
    if not isinstance(name, str):
        raise SuiteError(f"a suite is named by a string, got {name!r}; valid: {suite_names()}")
    if name in RECIPES:
        root = suite_dir(name)
        if not (root / "suite.json").exists():
            raise SuiteError(f"suite {name!r} is not trained yet: run `python -m helpers.train --suite {name}`")
        return LocalSuite(name, root)
    if name in HUB_SUITES:
        return HUB_SUITES[name]()
    m = _SEEDS_SUITE.match(name)
    if m and m["size"] in PYTHIA_SEED_SIZES:
        size = m["size"]
        return pythia_suite(name, [f"pythia-{size}"] + [f"pythia-{size}-seed{k}" for k in range(1, 10)], f"pythia-{size}, seeds 1234 and 1-9")
    if PYTHIA_RUN.match(name):
        try:
            return pythia_suite(name, [name])
        except SuiteError:
            pass
    raise SuiteError(f"unknown suite {name!r}; valid: {suite_names()}")
