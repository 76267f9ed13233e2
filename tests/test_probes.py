"""The repeated-random-tokens probe: the token draw, which targets each copy scores, and the gap on models whose
answer is known (no context use: 0; a perfect copier: about -ln V), on a tiny GPT-NeoX and on the nano suite."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.probes import copy_gap, induction_probe, probe_runs, repeated_tokens, spaced_steps, token_losses

VOCAB = 97


def test_repeated_tokens_shape_repeat_and_seed():
    t = repeated_tokens(VOCAB, n_sequences=5, length=8, seed=3, exclude=[0, 1])
    assert t.shape == (5, 16) and t.dtype == torch.int64
    assert torch.equal(t[:, :8], t[:, 8:])
    assert all(len(set(row[:8].tolist())) == 8 for row in t)  # distinct within a copy
    assert not set(t.flatten().tolist()) & {0, 1} and int(t.max()) < VOCAB
    assert torch.equal(t, repeated_tokens(VOCAB, 5, 8, seed=3, exclude=[0, 1]))
    assert not torch.equal(t, repeated_tokens(VOCAB, 5, 8, seed=4, exclude=[0, 1]))
    with pytest.raises(ValueError, match="distinct"):
        repeated_tokens(10, 2, 11)


class Copier(torch.nn.Module):
    """Predicts, at each position, the token that followed the latest earlier occurrence of the current token (an
    ideal induction head); uniform where the current token has not occurred before."""

    def __init__(self, vocab: int, confidence: float = 30.0):
        super().__init__()
        self.vocab, self.confidence = vocab, confidence
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        b, n = ids.shape
        same = ids[:, :, None] == ids[:, None, :]  # [b, i, j]: token j equals token i
        earlier = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)  # j < i
        hit = same & earlier
        j = torch.where(hit, torch.arange(n), -1).max(dim=-1).values  # latest earlier occurrence, -1 if none
        nxt = ids.gather(1, (j + 1).clamp(max=n - 1))
        logits = torch.zeros(b, n, self.vocab)
        logits.scatter_(2, nxt[..., None], self.confidence)
        logits[j < 0] = 0.0
        return SimpleNamespace(logits=logits)


class Unigram(torch.nn.Module):
    """Logits from the current token alone: no use of the context."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, ids):
        return SimpleNamespace(logits=self.table[ids])


def test_token_losses_score_the_next_token():
    model = Unigram(VOCAB)
    ids = repeated_tokens(VOCAB, 3, 6)
    losses = token_losses(model, ids, batch_size=2)
    assert losses.shape == (3, 11)
    logp = torch.log_softmax(model.table[ids[1, 4]].detach(), -1)
    assert losses[1, 4] == pytest.approx(-float(logp[ids[1, 5]]), rel=1e-5)


def test_a_model_without_context_has_no_gap():
    gap = copy_gap(Unigram(VOCAB), repeated_tokens(VOCAB, 8, 16), batch_size=3)
    assert gap["first_copy"] > 1.0
    assert abs(gap["gap"]) < 1e-5  # the same targets after the same tokens: exactly the same losses


def test_a_copier_makes_the_second_copy_free():
    gap = copy_gap(Copier(VOCAB), repeated_tokens(VOCAB, 8, 16))
    assert gap["first_copy"] == pytest.approx(math.log(VOCAB), rel=1e-4)  # nothing to copy yet: uniform
    assert gap["second_copy"] < 1e-6
    # about -ln V: scoring the second copy's first token (not predictable) would give only (15/16) of it
    assert gap["gap"] == pytest.approx(-math.log(VOCAB), rel=1e-4)


def _tiny_neox(zero_attention: bool):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, initializer_range=0.5)
    model = GPTNeoXForCausalLM(config).eval()
    if zero_attention:
        with torch.no_grad():
            for layer in model.gpt_neox.layers:
                layer.attention.dense.weight.zero_()
                layer.attention.dense.bias.zero_()
    return model


def test_on_a_tiny_gpt_neox():
    tokens = repeated_tokens(VOCAB, 6, 12)
    blind = copy_gap(_tiny_neox(zero_attention=True), tokens)
    assert abs(blind["gap"]) < 1e-4  # attention cut: each position sees only its own token
    random = copy_gap(_tiny_neox(zero_attention=False), tokens)
    assert all(np.isfinite(v) for v in random.values()) and random["first_copy"] > 1.0


def test_probe_runs_and_spaced_steps():
    pico = ["pico-0.6m", "pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3", "pico-1.1m", "pico-2.2m"]
    assert probe_runs(pico) == ["pico-0.6m", "pico-0.6m-seed1", "pico-1.1m", "pico-2.2m"]
    small = ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-160m-seed1", "pythia-160m-seed2"]
    assert probe_runs(small) == ["pythia-70m", "pythia-160m", "pythia-160m-seed1", "pythia-410m"]
    assert probe_runs(["pythia-410m"]) == ["pythia-410m"]
    from helpers.schedule import PYTHIA_CHECKPOINTS

    picked = spaced_steps(PYTHIA_CHECKPOINTS, 10)
    assert picked[0] == 0 and picked[-1] == 143000 and len(picked) <= 10 and picked == sorted(picked)
    assert spaced_steps([0, 1, 2], 10) == [0, 1, 2]


@pytest.mark.slow
def test_induction_probe_on_nano(nano):
    run = nano.run_names[0]
    steps = [nano.run(run).steps[0], nano.run(run).steps[-1]]
    df = induction_probe(nano, runs=[run], steps=steps, n_sequences=4, length=8)
    assert df.columns == ["run", "step", "first_copy", "second_copy", "gap"]
    assert df["run"].to_list() == [run, run] and df["step"].to_list() == steps
    assert df["gap"].is_finite().all() and (df["first_copy"] > 0).all()
    vocab = len(nano.tokenizer())
    assert abs(df["first_copy"][0] - math.log(vocab)) < 0.2  # an untrained model is close to uniform...
    assert abs(df["gap"][0]) < 0.05  # ...and cannot use the repeat
    with pytest.raises(ValueError, match="context"):
        induction_probe(nano, runs=[run], steps=steps[:1], length=10_000)


def test_copying_onset():
    import polars as pl

    from helpers.probes import copying_onset

    df = pl.DataFrame({"run": ["a"] * 4 + ["b"] * 2, "step": [0, 10, 100, 1000, 0, 1000],
                       "gap": [0.0, -0.2, -1.5, -3.0, 0.0, -0.3]})
    assert copying_onset(df) == {"a": 100, "b": None}
    assert copying_onset(df, threshold=-0.25) == {"a": 100, "b": 1000}


def test_probe_summary_description_and_figure():
    import json

    import polars as pl

    from helpers.probes import describe_probe, probe_figure, probe_summary

    flat = pl.DataFrame({"run": ["a", "a", "b", "b"], "step": [0, 600, 0, 600], "first_copy": [8.3, 11.0, 8.3, 11.2],
                         "second_copy": [8.3, 10.95, 8.3, 11.1], "gap": [0.0, -0.05, 0.0, -0.1]})
    s = probe_summary(flat)
    assert s["last_gap"] == (-0.1, -0.05) and s["best"] == {"run": "b", "step": 600, "gap": -0.1} and s["copies"] == {}
    text = describe_probe(flat, 4096)
    assert "-0.10 to -0.05 nats" in text and "No probed run gets within 1 nat of copying" in text
    copier = flat.with_columns(pl.when(pl.col("run") == "b").then(pl.col("gap") * 40).otherwise(pl.col("gap")).alias("gap"))
    assert "`b` copies from step 600" in describe_probe(copier, 4096)
    layout = json.loads(probe_figure(flat, "gap").to_json())["layout"]
    assert layout["xaxis"]["type"] == "log" and layout["xaxis"]["ticktext"][0] == "0"
