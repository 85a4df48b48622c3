"""``algorithm.execution=batched`` gives the sequential run's weights to float32 rounding, for
every algorithm that batches a round's hops; ``device`` and ``execution`` refuse bad values."""

import functools

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from derelayl.algorithms.baselines import LocalRunner
from derelayl.algorithms.fl.runner import FederatedPopulation, FederatedRunner
from derelayl.algorithms.fl.strategies import FedAdam, FedAvg, FedNova, FedProx, Scaffold
from derelayl.app.pipeline import run_experiment
from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop
from derelayl.learning.evaluation import EvalSet
from derelayl.learning.execution import batched_hop, resolve_device
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import CNN, MLP
from derelayl.protocol.behaviours import DROPOUT, FREE_RIDER, HONEST, NOISE
from derelayl.sim.errors import ConfigError

TOL = 1e-4


def parts(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        ParticipantData(
            i, torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
        )
        for i, n in enumerate(sizes)
    ]


VAL = EvalSet(
    torch.randn(60, 1, 8, 8, generator=torch.Generator().manual_seed(7)),
    torch.randint(0, 10, (60,), generator=torch.Generator().manual_seed(7)),
)


def module(momentum=0.9):
    torch.manual_seed(0)
    return ClassifierModule(
        MLP((1, 8, 8), 10), functools.partial(torch.optim.SGD, lr=0.05, momentum=momentum)
    )


def max_diff(a, b):
    return max(
        float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def fl_run(strategy, batched, momentum=0.9):
    """3 rounds of 5 clients of 6 (every behaviour), gains tracked; batched or one by one."""
    behaviour = np.array([HONEST, NOISE, HONEST, FREE_RIDER, DROPOUT, HONEST], dtype=np.int8)
    runner = FederatedRunner(
        LightningHop(batch_size=8, local_epochs=2),
        strategy,
        seed=1,
        clients_per_round=5,
        rounds=3,
        track_gains=True,
        population=FederatedPopulation(behaviour=behaviour),
        batched=BatchedHop(batch_size=8, local_epochs=2) if batched else None,
    )
    return runner.run(module(momentum), parts([23, 40, 9, 31, 17, 12]), VAL, VAL)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FedAvg(),
        lambda: FedProx(mu=0.1),
        lambda: Scaffold(local_lr=0.05),
        lambda: FedNova(momentum=0.0),
        lambda: FedAdam(),
        lambda: FedAvg(aggregator="median"),
    ],
)
def test_fl_rounds_batched_equal_sequential(make):
    momentum = 0.0 if make().name in ("scaffold", "fednova") else 0.9
    seq, bat = (fl_run(make(), batched, momentum) for batched in (False, True))
    assert max_diff(seq.model, bat.model) <= TOL
    assert (seq.hops, seq.samples_seen) == (bat.hops, bat.samples_seen)
    assert [p for p, _ in seq.participation] == [p for p, _ in bat.participation]


@pytest.mark.parametrize("batched", [False, True])
def test_fl_validation_gains_scored_in_one_pass_equal_one_by_one(monkeypatch, batched):
    # the marginal-gain payout's measure: each paid model's validation accuracy minus the
    # global model's, the round's models scored together
    import copy

    from derelayl.learning.evaluation import evaluate

    one_by_one = []
    scored = FederatedRunner.validation_gains

    def check(run, work, validation):
        gains = scored(run, work, validation)
        states = {u.pid: u.state for u in work.updates}
        keys = list(run.model.state_dict())
        for pid, gain in zip(work.paid, gains, strict=True):
            model = copy.deepcopy(run.model)
            model.load_state_dict(dict(zip(keys, states[pid])))
            one_by_one.append((gain, evaluate(model, validation)[1] - run.global_acc))
        return gains

    monkeypatch.setattr(FederatedRunner, "validation_gains", staticmethod(check))
    fl_run(FedAvg(), batched)
    assert len(one_by_one) >= 6 and len({a for a, _ in one_by_one}) > 1
    assert [a for a, _ in one_by_one] == [b for _, b in one_by_one]


def test_local_training_batched_equals_sequential():
    clients = parts([23, 40, 9, 31])

    def run(batched):
        runner = LocalRunner(
            LightningHop(batch_size=8),
            seed=0,
            rounds=2,
            batched=BatchedHop(batch_size=8) if batched else None,
        )
        return runner.run(module(), clients, VAL, VAL)

    seq, bat = run(False), run(True)
    for key in ("val_acc", "val_acc_worst", "val_acc_best", "test_acc"):
        assert seq.metrics[key] == pytest.approx(bat.metrics[key], abs=1e-9)
    assert seq.metrics["val_loss"] == pytest.approx(bat.metrics["val_loss"], abs=TOL)


@pytest.mark.parametrize(
    "extra", [[], ["participants.behaviour.noise=0.2", "participants.behaviour.free_rider=0.2"]]
)
def test_derelayl_batched_equals_sequential(make_cfg, tmp_path, extra):
    def run(execution):
        cfg = make_cfg(
            "tracking=none",
            "derelayl.rounds=4",
            "shapley.enabled=true",
            f"algorithm.execution={execution}",
            *extra,
        )
        out = tmp_path / execution
        metrics = run_experiment(cfg, out)
        return metrics, torch.load(out / "model.pt", weights_only=True)

    (seq, w_seq), (bat, w_bat) = run("sequential"), run("batched")
    assert max(float((w_seq[k] - w_bat[k]).abs().max()) for k in w_seq) <= TOL
    for key in ("test_acc", "hops", "samples_seen", "coins_total", "shapley_players"):
        assert seq[key] == pytest.approx(bat[key], abs=1e-9), key


def test_auto_batches_where_it_pays():
    mlp, cnn = (
        module(),
        ClassifierModule(CNN((1, 8, 8), 10), functools.partial(torch.optim.SGD, lr=0.1)),
    )
    cpu = torch.device("cpu")
    assert batched_hop("auto", mlp, cpu, 8, 1, None) is not None
    assert batched_hop("auto", cnn, cpu, 8, 1, None) is None  # convolutions: no gain on a CPU
    assert batched_hop("batched", cnn, cpu, 8, 1, None) is not None
    assert batched_hop("sequential", mlp, cpu, 8, 1, None) is None
    dropout = ClassifierModule(
        MLP((1, 8, 8), 10, dropout=0.5), functools.partial(torch.optim.SGD, lr=0.1)
    )
    assert batched_hop("auto", dropout, cpu, 8, 1, None) is None
    with pytest.raises(ConfigError, match="dropout"):
        batched_hop("batched", dropout, cpu, 8, 1, None)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ConfigError, match="no GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    "args, message",
    [
        (["device=tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda"),
        (
            ["algorithm.execution=fast"],
            "unknown algorithm.execution 'fast'; allowed: auto, sequential, batched",
        ),
        (["algorithm.execution=batched", "model.net.dropout=0.5"], "uses dropout"),
    ],
)
def test_bad_device_or_execution_is_one_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(*args, "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "bad").exists()
