"""Progress lines count right (budgeted FL runs, resumed runs, skipped runs) and long steps
(loading, Shapley values) say what they are doing."""

import logging
import re

import pytest

from derelayl.app.pipeline import run_experiment
from derelayl.io.ledger_files import EconomyFiles


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "derelayl"]


def test_a_budgeted_fl_run_counts_samples_against_its_budget(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="derelayl")
    metrics = run_experiment(
        make_cfg("algorithm=fedavg", "tracking=none", "progress_every=4"), tmp_path / "run"
    )
    rounds = [m for m in lines(caplog) if m.startswith("round ")]
    assert not any(re.match(r"round \d+/", m) for m in rounds), rounds  # no "round 11/10"
    budget = 5 * 1257  # budget_epochs x the training set
    assert rounds[0].startswith("round 4 (") and f"/{budget} budgeted samples)" in rounds[0]
    # the last round is printed although it is not a multiple of progress_every
    last = metrics["rounds"]
    assert last % 4 and rounds[-1].startswith(
        f"round {last} ({metrics['samples_seen']}/{budget} budgeted samples)"
    )
    fixed = run_experiment(
        make_cfg("algorithm=fedavg", "tracking=none", "algorithm.rounds=3"), tmp_path / "fixed"
    )
    assert fixed["rounds"] == 3
    assert [m.split(":")[0] for m in lines(caplog) if m.startswith("round ")][-3:] == [
        "round 1/3",
        "round 2/3",
        "round 3/3",
    ]


def test_a_resumed_run_counts_from_where_it_resumes(make_cfg, tmp_path, monkeypatch, caplog):
    args = ("derelayl.performance=random_walk", "derelayl.rounds=6", "tracking=none")
    original = EconomyFiles.on_settled

    def crash(self, state, perf_state, ledger, history):
        if state.round == 4:
            raise KeyboardInterrupt
        original(self, state, perf_state, ledger, history)

    monkeypatch.setattr(EconomyFiles, "on_settled", crash)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(*args), tmp_path / "run")
    monkeypatch.setattr(EconomyFiles, "on_settled", original)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="derelayl")
    run_experiment(make_cfg(*args), tmp_path / "run")
    shown = [m.split(":")[0] for m in lines(caplog) if m.startswith("round ")]
    assert shown == ["round 4/6", "round 5/6", "round 6/6"], shown  # not "round 3/0"
    assert any(m.startswith("resuming") and "after 3 settled rounds" in m for m in lines(caplog))


def test_a_skipped_run_says_what_it_holds(make_cfg, tmp_path, caplog):
    """A random-walk run has no test accuracy: the skip line shows what it has."""
    cfg = make_cfg("derelayl.performance=random_walk", "derelayl.rounds=3", "tracking=none")
    run_experiment(cfg, tmp_path / "run")
    caplog.set_level(logging.INFO, logger="derelayl")
    run_experiment(cfg, tmp_path / "run")
    skipped = [m for m in lines(caplog) if m.startswith("skipped:")]
    assert len(skipped) == 1 and "None" not in skipped[0] and "best_quality 0." in skipped[0]


def test_shapley_values_show_progress(caplog):
    from derelayl.app.runners.fairness import ProgressValue

    class Game:
        players = [1, 2, 3]  # noqa: RUF012 (a stand-in game: nothing changes its players)

        def __call__(self, coalition):
            return float(len(coalition))

    caplog.set_level(logging.INFO, logger="derelayl")
    value = ProgressValue(Game(), total=8, every_s=0.0)
    assert [value(frozenset(s)) for s in ([], [1], [1, 2])] == [0.0, 1.0, 2.0]
    assert lines(caplog)[-1].startswith("Shapley: 3/8 coalitions evaluated")


def test_the_steps_before_round_one_say_what_is_loading(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="derelayl")
    run_experiment(
        make_cfg("algorithm=relay", "algorithm.rounds=1", "num_participants=5"), tmp_path / "run"
    )
    shown = lines(caplog)
    first_round = next(i for i, m in enumerate(shown) if m.startswith("round 1/1"))
    before = " | ".join(shown[:first_round])
    assert "loading dataset digits" in before and "opening an MLflow run" in before
