"""The registry on the trained nano suite and on a stand-in hub repo (a local folder per revision)."""

import json
import shutil
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

from helpers.suites import DuplicateCheckpointWarning, LocalSuite, SuiteError, pythia_suite, revision_suite


def test_nano_table_lists_runs(nano):
    table = nano.table()
    assert table["run"].to_list() == ["nano-20k", "nano-20k-seed1", "nano-60k", "nano-60k-seed1"]
    assert table["checkpoints"].to_list() == [10] * 4
    run = nano.run("nano-60k")
    assert run.tokens_seen(48) == 48 * 8 * 64
    assert set(run.sha256) == set(run.steps)


def test_checkpoint_loads_directly_with_transformers(nano):
    folder = nano.root / "nano-60k" / "step48"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(nano.root)
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.25
    assert model.config.use_parallel_residual and not model.config.tie_word_embeddings
    ids = tok("To be, or not to be", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], 512)


def test_load_gives_model_and_tokenizer(nano):
    model, tok = nano.load("nano-20k", 16)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    half, _ = nano.load("nano-20k", 16, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    assert tok.decode(tok("Let there be light")["input_ids"]) == "Let there be light"


def test_weight_seeds_differ_and_data_order_is_shared(nano):
    a = nano.run("nano-20k").sha256[0]
    b = nano.run("nano-20k-seed1").sha256[0]
    assert a != b
    assert nano.run("nano-20k").data_seed == nano.run("nano-20k-seed1").data_seed


@pytest.mark.parametrize("run, step, words", [("nano-99k", 0, "unknown run"), ("nano-20k", 3, "no checkpoint at step 3")])
def test_unknown_run_or_step(nano, run, step, words):
    with pytest.raises(SuiteError, match=words) as e:
        nano.load(run, step)
    assert "\n" not in str(e.value)


@pytest.fixture
def nano_copy(nano, tmp_path):
    root = tmp_path / "nano"
    shutil.copytree(nano.root, root)
    return root


def test_corrupt_checkpoint_names_the_file(nano_copy):
    weights = nano_copy / "nano-20k" / "step8" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    suite = LocalSuite("nano", nano_copy)
    with pytest.raises(SuiteError, match="corrupt") as e:
        suite.load("nano-20k", 8)
    assert str(weights) in str(e.value)
    suite.load("nano-20k", 16)  # other steps still load


def test_missing_checkpoint_names_the_file(nano_copy):
    weights = nano_copy / "nano-20k" / "step8" / "model.safetensors"
    weights.unlink()
    with pytest.raises(SuiteError, match="missing") as e:
        LocalSuite("nano", nano_copy).load("nano-20k", 8)
    assert str(weights) in str(e.value)


def test_duplicate_local_checkpoint_warns(nano_copy):
    run = nano_copy / "nano-20k"
    shutil.rmtree(run / "step1")
    shutil.copytree(run / "step0", run / "step1")
    meta = json.loads((nano_copy / "suite.json").read_text())
    meta["runs"][0]["sha256"]["1"] = meta["runs"][0]["sha256"]["0"]
    (nano_copy / "suite.json").write_text(json.dumps(meta))
    suite = LocalSuite("nano", nano_copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suite.load("nano-20k", 0)
        suite.load("nano-20k", 2)
    with pytest.warns(DuplicateCheckpointWarning, match="step 1 has the same weights as step 0"):
        suite.load("nano-20k", 1)


def _save_tiny(folder, seed):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128)
    GPTNeoXForCausalLM(config).save_pretrained(folder)


@pytest.fixture
def hub_mirror(nano, tmp_path, monkeypatch):
    """A stand-in for the hub: <mirror>/<repo>/<revision>/ with config, weights and tokenizer files."""
    mirror = tmp_path / "mirror"
    for repo, revisions in {
        "EleutherAI/pythia-14m": {"step0": 0, "step1": 0, "step2": 2, "step143000": 3},
        "stanford-crfm/alias-gpt2-small-x21": {"checkpoint-0": 0, "checkpoint-10": 1},
    }.items():
        for revision, seed in revisions.items():
            folder = mirror / repo / revision
            _save_tiny(folder, seed)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(nano.root / f, folder / f)
    monkeypatch.setenv("BOOK_HUB_MIRROR", str(mirror))
    return mirror


def test_pythia_suite_loads_revisions_from_the_mirror(hub_mirror):
    suite = pythia_suite("pythia-14m", ["pythia-14m"])
    model, tok = suite.load("pythia-14m", 143000)
    assert model.config.hidden_size == 32 and tok.decode(tok("and God said")["input_ids"]) == "and God said"
    with pytest.raises(SuiteError, match="pythia-14m") as e:
        suite.load("pythia-14m", 1000)  # a valid Pythia step the mirror does not have
    assert "step1000" in str(e.value)


def test_pythia_step1_warns_known_issue_and_duplicate(hub_mirror):
    suite = pythia_suite("pythia-14m", ["pythia-14m"])
    suite.load("pythia-14m", 0)
    with pytest.warns(DuplicateCheckpointWarning) as record:
        suite.load("pythia-14m", 1)
    messages = [str(w.message) for w in record]
    assert any("#83" in m for m in messages)
    assert any("same weights as step 0" in m for m in messages)


def test_revision_suite_for_any_repo(hub_mirror):
    suite = revision_suite(
        "crfm-tiny", {"alias": "stanford-crfm/alias-gpt2-small-x21"}, {0: "checkpoint-0", 10: "checkpoint-10"},
        size="tiny", params=1, non_embedding_params=1, tokens_per_step=1,
    )
    a, _ = suite.load("alias", 0)
    b, _ = suite.load("alias", 10)
    assert not torch.equal(a.gpt_neox.embed_in.weight, b.gpt_neox.embed_in.weight)
    assert suite.table()["checkpoints"].to_list() == [2]
