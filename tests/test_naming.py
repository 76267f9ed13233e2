import pytest

from helpers.recipes import RECIPES
from helpers.suites import PYTHIA_CHECKPOINTS, SuiteError, load_suite, pythia_run


def test_local_run_names_follow_pythia():
    names = [r.name for r in RECIPES["pico"].runs()]
    assert names == ["pico-0.6m", "pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3", "pico-1.1m", "pico-2.2m"]
    assert {r.seed for r in RECIPES["pico"].runs()} == {1234, 1, 2, 3}
    assert len({r.data_seed for r in RECIPES["pico"].runs()}) == 1  # weight seeds share the batch order


@pytest.mark.parametrize(
    "name, size, seed, repo",
    [
        ("pythia-160m", "160m", 1234, "EleutherAI/pythia-160m"),
        ("pythia-70m-deduped", "70m", 1234, "EleutherAI/pythia-70m-deduped"),
        ("pythia-410m-seed3", "410m", 3, "EleutherAI/pythia-410m-seed3"),
        ("pythia-1.4b", "1.4b", 1234, "EleutherAI/pythia-1.4b"),
    ],
)
def test_pythia_run_names(name, size, seed, repo):
    run = pythia_run(name)
    assert (run.size, run.seed, run.source) == (size, seed, repo)
    assert run.steps == PYTHIA_CHECKPOINTS and run.revisions[1000] == "step1000"


def test_pythia_param_counts():
    assert pythia_run("pythia-70m").params == 70_426_624
    assert pythia_run("pythia-160m").non_embedding_params == 85_056_000


@pytest.mark.parametrize("name", ["pythia-7m", "pythia-1b-seed2", "pythia-160m-seed0", "pico2"])
def test_unknown_names_give_one_line_errors(name):
    with pytest.raises(SuiteError) as e:
        load_suite(name)
    assert "\n" not in str(e.value) and "valid" in str(e.value)


def test_named_hub_suites():
    suite = load_suite("pythia-small")
    assert suite.run_names[:3] == ["pythia-70m", "pythia-160m", "pythia-410m"]
    assert len(load_suite("pythia-160m-seeds").runs) == 10
    crfm = load_suite("crfm-gpt2-small")
    assert len(crfm.runs[0].steps) == 609 and crfm.runs[0].revisions[400000] == "checkpoint-400000"
