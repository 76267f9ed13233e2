"""Bad input gets one clear line and loses nothing: damaged files are rebuilt or named, resumes stay identical,
settings are checked before any work, and the command-line tools never show a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import extract as X
from helpers.atomic import atomic_path, clean_stale_temporaries
from helpers.losses import LossTableError, load_losses
from helpers.samples import SamplesError
from helpers.suites import LocalSuite, SuiteError, load_suite
from helpers.train import train_suite

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(nano, data_root, tmp_path, monkeypatch) -> Path:
    """A data root of its own with a copy of the trained nano suite and the shared corpus."""
    root = tmp_path / "data"
    shutil.copytree(data_root / "suites" / "nano", root / "suites" / "nano")
    shutil.copytree(data_root / "corpus" / "pico-pile", root / "corpus" / "pico-pile")
    monkeypatch.setenv("BOOK_DATA", str(root))
    return root


def _cli(module: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---- training -------------------------------------------------------------------------------------------------------


def test_a_run_trained_alone_equals_one_trained_beside_others(nano, root):
    """Training one run in-process (as a resume with one run left does) gives the bytes a worker pool gave."""
    shutil.rmtree(root / "suites" / "nano" / "nano-20k")
    train_suite("nano", runs=["nano-20k"], progress=False)
    again = json.loads((root / "suites/nano/nano-20k/run.json").read_text())["sha256"]
    assert again == {str(k): v for k, v in nano.run("nano-20k").sha256.items()}


def test_a_damaged_checkpoint_of_a_finished_run_is_trained_again(nano, root):
    weights = root / "suites/nano/nano-20k/step8/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    shutil.rmtree(root / "suites/nano/nano-20k/step16")
    with pytest.warns(UserWarning, match=r"nano-20k: checkpoint step8 is missing or corrupt \(and 1 more\)"):
        train_suite("nano", progress=False)
    suite = LocalSuite("nano", root / "suites" / "nano")
    suite.load("nano-20k", 8)
    suite.load("nano-20k", 16)
    assert suite.run("nano-20k").sha256 == nano.run("nano-20k").sha256


def test_damaged_tokenizer_and_token_cache_are_rebuilt(nano, root):
    tokenizer = root / "suites/nano/tokenizer.json"
    good = tokenizer.read_bytes()
    tokenizer.write_text("garbage")
    with pytest.raises(SuiteError, match=f"tokenizer file {tokenizer} is corrupt"):
        LocalSuite("nano", root / "suites" / "nano").load("nano-20k", 8)
    with pytest.warns(UserWarning, match="corrupt: training the tokenizer again"):
        train_suite("nano", progress=False)
    assert tokenizer.read_bytes() == good  # deterministic: the same tokenizer
    cache = next((root / "cache").glob("nano-train-tokens-*.npy"))
    expected = np.load(cache)
    cache.write_bytes(cache.read_bytes()[:50])
    train_suite("nano", progress=False)
    assert np.array_equal(np.load(cache), expected)


def test_corrupt_suite_json_names_the_file_and_the_fix(root):
    path = root / "suites/nano/suite.json"
    meta = json.loads(path.read_text())
    for text in ("{not json", "[]", json.dumps({k: v for k, v in meta.items() if k != "context"})):
        path.write_text(text)
        with pytest.raises(SuiteError, match=f"suite file {path} is corrupt .*python -m helpers.train --suite nano"):
            load_suite("nano")
    train_suite("nano", progress=False)  # which rewrites it
    assert load_suite("nano").run_names == meta_names(meta)


def meta_names(meta: dict) -> list[str]:
    return [r["name"] for r in meta["runs"]]


def test_train_cli_hub_suite_book_suite_and_bad_values(root):
    proc = _cli("helpers.train", "--suite", "pythia-small")
    assert proc.returncode == 0 and "hub suite: nothing to train" in proc.stdout
    _one_line_error(_cli("helpers.train", env={"BOOK_SUITE": "picoo"}), "unknown suite 'picoo'", "pico")
    _one_line_error(_cli("helpers.train", "--suite", "nano", "--workers", "0"), "workers must be at least 1")
    proc = _cli("helpers.train", env={"BOOK_SUITE": " nano "})  # the suite of the build, already trained
    assert proc.returncode == 0 and "suites/nano/suite.json" in proc.stdout


def test_train_cli_unwritable_data_root_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    _one_line_error(_cli("helpers.train", "--suite", "nano", env={"BOOK_DATA": str(tmp_path / "a-file" / "data")}),
                    "cannot write", "BOOK_DATA")


# ---- loading --------------------------------------------------------------------------------------------------------


def test_load_takes_steps_and_dtypes_as_users_write_them(nano):
    import torch

    model, _ = nano.load("nano-20k", "8")
    same, _ = nano.load("nano-20k", 8.0, dtype="fp32")
    assert torch.equal(model.gpt_neox.embed_in.weight, same.gpt_neox.embed_in.weight)
    assert nano.load("nano-20k", np.int64(8), dtype="bf16")[0].dtype == torch.bfloat16
    for step, words in ((8.5, "whole number"), ("eight", "whole number"), (9, "no checkpoint at step 9")):
        with pytest.raises(SuiteError, match=words):
            nano.load("nano-20k", step)
    with pytest.raises(SuiteError, match="unknown dtype 'fp12'"):
        nano.load("nano-20k", 8, dtype="fp12")
    with pytest.raises(SuiteError, match="a suite is named by a string"):
        load_suite(None)


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(root):
    from helpers.corpus import load_documents
    from helpers.tokenizer import train_tokenizer

    texts = load_documents("pico-pile", "train")["text"].head(300).to_list()
    train_tokenizer(texts, 2048, root / "suites/nano/tokenizer.json")
    suite = LocalSuite("nano", root / "suites" / "nano")
    with pytest.raises(SuiteError, match="tokenizer of suite 'nano' has .* tokens but nano-20k step 8 has a vocabulary of 512"):
        suite.load("nano-20k", 8)


def test_a_run_not_trained_yet_says_so(root):
    path = root / "suites/nano/suite.json"
    meta = json.loads(path.read_text())
    meta["runs"] = [r for r in meta["runs"] if r["name"] != "nano-60k"]
    path.write_text(json.dumps(meta))
    with pytest.raises(SuiteError, match="run 'nano-60k' of suite 'nano' is not trained yet"):
        load_suite("nano").run("nano-60k")
    with pytest.raises(SuiteError, match="unknown run 'nano-99k'"):
        load_suite("nano").run("nano-99k")


# ---- extraction -----------------------------------------------------------------------------------------------------


KW = dict(runs="nano-20k", steps=[0, 8], n_samples=500, progress=False, validation=False)


def test_a_corpus_changed_under_the_suite_is_refused(root, tmp_path):
    import polars as pl

    path = root / "corpus/pico-pile/documents.parquet"
    docs = pl.read_parquet(path)
    docs.with_columns(pl.col("text").str.to_uppercase()).write_parquet(path)
    with pytest.raises(SamplesError, match="is not the one suite 'nano' was trained on"):
        X.extract("nano", root=tmp_path / "losses", **KW)


def test_a_damaged_loss_file_is_computed_again_and_never_read(root, tmp_path):
    table = X.extract("nano", root=tmp_path / "losses", **KW)
    expected, _ = table.matrix("nano-20k")
    damaged = table.layout.loss_file("nano-20k", 8)
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(LossTableError, match=f"loss file {damaged} is damaged"):
        table.matrix("nano-20k")
    with pytest.warns(UserWarning, match="is damaged: computing it again"):
        table = X.extract("nano", root=tmp_path / "losses", **KW)
    assert np.array_equal(table.matrix("nano-20k")[0], expected)


def test_settings_are_checked_before_any_work(nano, tmp_path):
    for kw, words in ((dict(device="gpu"), "unknown device 'gpu'"), (dict(device="mps"), "unsupported device"),
                      (dict(batch_size=0), "batch size must be at least 1")):
        with pytest.raises(ValueError, match=words):
            X.extract("nano", root=tmp_path / "losses", **KW, **kw)
    assert not (tmp_path / "losses").exists()
    with pytest.raises(SuiteError, match="a step is a whole number of updates, got 8.5"):
        X.extract("nano", root=tmp_path / "losses", **{**KW, "steps": [8.5]})
    for kw, words in ((dict(mode="every"), "unknown sampling mode"), (dict(split="tset"), "unknown split"),
                      (dict(steps=[9]), "no checkpoint at step 9")):
        with pytest.raises((SamplesError, SuiteError), match=words):
            load_losses("nano", extract_missing=False, root=tmp_path / "losses", **kw)
    assert load_losses("nano", extract_missing=False, runs="nano-20k", steps=["8"], root=tmp_path).wanted_steps == {"nano-20k": [8]}


def test_extract_cli_errors_go_to_stderr_and_ctrl_c_is_one_line(root, tmp_path):
    (root / "suites/nano/nano-20k/step8/model.safetensors").unlink()
    args = ["--suite", "nano", "--runs", "nano-20k", "--steps", "0", "8", "--no-validation", "--quiet", "--out", str(tmp_path / "a")]
    proc = _cli("helpers.extract", *args)
    assert proc.returncode == 1 and "step 8" in proc.stderr and "error" not in proc.stdout
    assert proc.stderr.count("nano-20k step 8") == 2  # as it happens, and in the summary at the end
    _one_line_error(_cli("helpers.extract", "--suite", "nano", "--device", "cuda:0"), "no CUDA device")
    _one_line_error(_cli("helpers.extract", "--suite", "nano", "--batch-size", "-1"), "batch size")

    env = {**os.environ, "BOOK_EXTRACT_DELAY": "2"}
    cmd = [sys.executable, "-m", "helpers.extract", "--suite", "nano", "--runs", "nano-60k", "--quiet", "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written = lambda: list((tmp_path / "b").glob("*/every_k-*/*/step*.parquet"))  # noqa: E731 (not temporaries)
    deadline = time.time() + 120
    while not written() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished checkpoints are kept")
    assert written()


# ---- atomic writes --------------------------------------------------------------------------------------------------


def test_temporaries_of_live_writers_survive_cleaning(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead_pid, live.pid):
            (folder / f".step8.parquet.{pid}.abc123.tmp").mkdir()
        (folder / ".old-style.xyz.tmp").mkdir()
        old = folder / f".step9.parquet.{live.pid}.def456.tmp"
        old.mkdir()
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        with atomic_path(folder / "mine.txt") as tmp:
            tmp.write_text("x")
            clean_stale_temporaries(folder)  # never our own temporary
            assert tmp.exists()
        left = sorted(p.name for p in folder.glob(".*.tmp"))
        assert left == [f".step8.parquet.{live.pid}.abc123.tmp"]
        assert (folder / "mine.txt").read_text() == "x"
    finally:
        live.kill()
        live.wait()


def test_setup_notebook_names_only_valid_suites(monkeypatch):
    from helpers import book

    monkeypatch.setenv("BOOK_SUITE", "pythia-99m")
    with pytest.raises(SuiteError, match="unknown Pythia model 'pythia-99m'|unknown suite 'pythia-99m'"):
        book.setup_notebook(verbose=False)
    monkeypatch.setenv("BOOK_SUITE", " pythia-160m-seeds ")
    assert book.setup_notebook(verbose=False) == "pythia-160m-seeds"


def test_colab_data_root_is_on_drive_when_it_is_mounted(tmp_path):
    from helpers import book

    assert book.colab_data_root(str(tmp_path / "no-drive")) == book.COLAB_DATA
    (tmp_path / "MyDrive").mkdir()
    assert book.colab_data_root(str(tmp_path / "MyDrive")) == str(tmp_path / "MyDrive" / "book-data")


def test_fetch_note_counts_every_checkpoint_of_a_hub_suite():
    from helpers import book

    suite = load_suite("pythia-small")
    note = book.fetch_note(suite)
    assert "6 runs x 154 checkpoints (924 in all" in note
    gb = sum(2 * r.params * 154 for r in suite.runs) / 1e9
    assert f"about {gb:,.0f} GB" in note and 300 < gb < 400
    assert book.fetch_note(type("Local", (), {"kind": "local"})()) == ""


def test_hub_suite_without_its_checkpoints_stops_early_with_one_reason(nano, tmp_path, monkeypatch):
    """Offline, with only the last revision in the HF cache: three checkpoints fail to fetch, then the extraction
    stops and says why, instead of failing once per checkpoint of the whole suite."""
    from huggingface_hub import constants

    from helpers.suites import revision_suite
    from test_extract import _cache_revision

    monkeypatch.delenv("BOOK_HUB_MIRROR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    files = {f.name: f.read_bytes() for f in (nano.root / "nano-20k" / "step48").iterdir()}
    files.update({f: (nano.root / f).read_bytes() for f in ("tokenizer.json", "tokenizer_config.json")})
    _cache_revision(tmp_path / "hub", "org/tiny", ["r48"], "4" * 40, files)
    revisions = {s: f"r{s}" for s in (0, 8, 16, 24, 32, 40, 48)}
    suite = revision_suite("tiny-hub", {"tiny": "org/tiny"}, revisions, size="tiny", params=1, non_embedding_params=1,
                           tokens_per_step=1)
    with pytest.raises(X.ExtractionError) as info:
        X.extract(suite, mode="all_positions", n_documents=2, context=32, root=tmp_path / "losses", progress=False,
                  validation=False)
    lines = str(info.value).splitlines()
    assert len(lines) == 4 and all(line.startswith(f"tiny step {s}: cannot fetch") for line, s in zip(lines, (0, 8, 16)))
    assert lines[3].startswith("stopped after the first 3 checkpoints could not be fetched")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))  # not even the tokenizer
    with pytest.raises(SamplesError, match="cannot load the config of org/tiny revision r48"):
        X.extract(suite, mode="all_positions", n_documents=2, root=tmp_path / "losses2", progress=False)
    fresh = revision_suite("tiny-hub", {"tiny": "org/tiny"}, revisions, size="tiny", params=1, non_embedding_params=1,
                           tokens_per_step=1)
    with pytest.raises(SuiteError, match="cannot load the tokenizer of org/tiny revision r48"):
        fresh.tokenizer()


def test_an_error_without_a_message_still_gives_a_one_line_error(monkeypatch):
    import huggingface_hub

    from helpers.suites import one_line, revision_suite

    assert one_line(TimeoutError()) == "TimeoutError"
    assert one_line(OSError("disk\n  full\n"), limit=7) == "disk fu"

    def silent_failure(*args, **kwargs):
        raise TimeoutError()

    monkeypatch.delenv("BOOK_HUB_MIRROR", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", silent_failure)
    suite = revision_suite("tiny-hub", {"tiny": "org/tiny"}, {8: "r8"}, size="tiny", params=1, non_embedding_params=1,
                           tokens_per_step=1)
    with pytest.raises(SuiteError, match=r"^cannot fetch org/tiny revision r8: TimeoutError: TimeoutError$"):
        suite.checkpoint_dir(suite.run("tiny"), 8)
