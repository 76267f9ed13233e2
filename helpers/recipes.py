"""Recipes of the suites we train ourselves: Pythia's architecture and optimiser, scaled down to a CPU.

A recipe fixes the corpus, tokenizer, context, batch, schedule and optimiser of a suite, and its model sizes and
weight seeds. ``python -m helpers.train --suite <name>`` trains every run of a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .schedule import pythia_shaped_schedule

DEFAULT_SEED = 1234  # Pythia's default seed; other weight seeds are named ``-seed<k>`` as on the hub


@dataclass(frozen=True)
class ModelSize:
    label: str  # size in run names, e.g. "0.6m" in "pico-0.6m" (total parameters, as Pythia names them)
    n_layer: int  # transformer blocks
    d_model: int  # residual stream width
    n_head: int  # attention heads (head dim = d_model / n_head)


@dataclass(frozen=True)
class Recipe:
    name: str  # suite name, the prefix of its run names
    corpus: str  # corpus under <data>/corpus/
    vocab_size: int  # byte-level BPE vocabulary, including <|endoftext|>
    tokenizer_chars: int | None  # train the tokenizer on the first this-many characters of train (None: all)
    context: int  # tokens per training sequence (and the evaluation context)
    batch_size: int  # sequences per step
    total_steps: int  # optimiser steps per run
    checkpoint_interval: int  # evenly spaced checkpoints after the powers of two
    lr: float  # peak learning rate
    sizes: tuple[ModelSize, ...]
    extra_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # size label -> weight seeds besides 1234
    data_seed: int = 0  # batch order; the same for every weight seed
    warmup_fraction: float = 0.01  # linear warm-up over this share of steps (Pythia: 1%)
    final_lr_fraction: float = 0.1  # cosine decay to this share of the peak (Pythia: 10%)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    rotary_pct: float = 0.25  # share of each head's dimensions that get rotary embeddings (Pythia: 25%)

    @property
    def steps(self) -> list[int]:
        return pythia_shaped_schedule(self.total_steps, self.checkpoint_interval)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    def runs(self) -> list["RunSpec"]:
        out = []
        for size in self.sizes:
            out.append(RunSpec(f"{self.name}-{size.label}", size, DEFAULT_SEED, self.data_seed))
            for seed in self.extra_seeds.get(size.label, ()):
                out.append(RunSpec(f"{self.name}-{size.label}-seed{seed}", size, seed, self.data_seed))
        return out

    def model_config(self, size: ModelSize, eos_token_id: int = 0):
        """A ``GPTNeoXConfig`` in Pythia's shape: parallel attention + MLP, partial rotary, untied embeddings."""
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            vocab_size=self.vocab_size,
            hidden_size=size.d_model,
            num_hidden_layers=size.n_layer,
            num_attention_heads=size.n_head,
            intermediate_size=4 * size.d_model,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": self.rotary_pct},
            max_position_embeddings=self.context,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            initializer_range=0.02,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
        )


@dataclass(frozen=True)
class RunSpec:
    name: str
    size: ModelSize
    seed: int  # weight-initialisation seed
    data_seed: int  # batch-order seed


def count_parameters(n_layer: int, d_model: int, vocab_size: int) -> tuple[int, int]:
    """(total, non-embedding) parameters of a GPT-NeoX with untied embeddings and a 4x MLP.

    Per block: two LayerNorms (4d), QKV (3d^2+3d), output (d^2+d), MLP (8d^2+5d) = 12d^2 + 13d; final LayerNorm 2d;
    input and output embeddings 2Vd. Pythia-70m: 18,915,328 non-embedding, 70,426,624 total.
    """
    non_embedding = n_layer * (12 * d_model**2 + 13 * d_model) + 2 * d_model
    return non_embedding + 2 * vocab_size * d_model, non_embedding


RECIPES: dict[str, Recipe] = {
    # Seconds to train: for tests. Two sizes x two seeds.
    "nano": Recipe(
        name="nano",
        corpus="pico-pile",
        vocab_size=512,
        tokenizer_chars=1_000_000,
        context=64,
        batch_size=8,
        total_steps=48,
        checkpoint_interval=8,
        lr=3e-3,
        sizes=(ModelSize("20k", 1, 16, 2), ModelSize("60k", 2, 32, 4)),
        extra_seeds={"20k": (1,), "60k": (1,)},
    ),
    # The book's default: three sizes spanning 12x in non-embedding parameters, four weight seeds of the smallest.
    # 600 steps x 4,096 tokens = 2.5M tokens per run (0.66 epochs of the train split), 45 checkpoints.
    "pico": Recipe(
        name="pico",
        corpus="pico-pile",
        vocab_size=4096,
        tokenizer_chars=None,
        context=128,
        batch_size=32,
        total_steps=600,
        checkpoint_interval=15,
        lr=2e-3,
        sizes=(ModelSize("0.6m", 2, 64, 4), ModelSize("1.1m", 3, 96, 4), ModelSize("2.2m", 6, 128, 4)),
        extra_seeds={"0.6m": (1, 2, 3)},
    ),
}
