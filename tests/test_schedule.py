import numpy as np
import pytest

from helpers.recipes import RECIPES, count_parameters
from helpers.schedule import PYTHIA_CHECKPOINTS, log_step_weights, pythia_shaped_schedule


def test_pythia_schedule_has_154_steps():
    assert len(PYTHIA_CHECKPOINTS) == 154
    assert PYTHIA_CHECKPOINTS[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert PYTHIA_CHECKPOINTS[-1] == 143000


def test_pythia_shaped_schedule():
    assert pythia_shaped_schedule(64, 16) == [0, 1, 2, 4, 8, 16, 32, 48, 64]
    assert pythia_shaped_schedule(600, 15)[:7] == [0, 1, 2, 4, 8, 15, 30]
    with pytest.raises(ValueError):
        pythia_shaped_schedule(100, 15)


def test_pico_has_enough_checkpoints_and_spans_ten_times():
    pico = RECIPES["pico"]
    assert len(pico.steps) >= 40 and pico.steps[-1] == pico.total_steps
    assert pico.context >= 128
    non_embedding = [count_parameters(s.n_layer, s.d_model, pico.vocab_size)[1] for s in pico.sizes]
    assert max(non_embedding) / min(non_embedding) >= 10
    seeds = [r for r in pico.runs() if r.size == pico.sizes[0]]
    assert len({r.seed for r in seeds}) == 4


def test_log_step_weights_follow_michaud():
    steps = [0, 1, 2, 4, 8, 16, 32]
    w = log_step_weights(steps)
    d = np.diff(np.log10(steps[1:]))
    expected = np.concatenate([[d[0]], d, [d[-1]]])
    np.testing.assert_allclose(w, expected / expected.sum())
    assert w.shape == (len(steps),)
