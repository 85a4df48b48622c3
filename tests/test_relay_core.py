"""The relay runner, schedules and the product's hop, on small synthetic data."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from derelayl.algorithms.relay import RelayRunner
from derelayl.algorithms.schedules import LargestFirstSchedule, RandomSchedule, RingSchedule
from derelayl.data.participants import ParticipantData
from derelayl.learning.evaluation import EvalSet
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import CNN, MLP
from derelayl.sim.errors import ConfigError
from derelayl.sim.events import Observer
from derelayl.sim.seeding import numpy_rng, torch_generator


def make_participants(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for pid, n in enumerate(sizes):
        x = torch.randn(n, 1, 8, generator=gen)
        y = (x.sum(dim=(1, 2)) > 0).long()
        out.append(ParticipantData(pid, x, y))
    return out


def make_module(seed=0, lr=0.1):
    torch.manual_seed(seed)
    return ClassifierModule(
        MLP((1, 8), 2, hidden=(16,)), functools.partial(torch.optim.SGD, lr=lr, momentum=0.9)
    )


def test_schedules():
    sizes = [5, 9, 1, 9]
    assert RingSchedule().order(1, sizes, numpy_rng(0, "s")) == [0, 1, 2, 3]
    assert LargestFirstSchedule().order(1, sizes, numpy_rng(0, "s")) == [1, 3, 0, 2]
    a = RandomSchedule().order(1, sizes, numpy_rng(0, "s", 1))
    b = RandomSchedule().order(2, sizes, numpy_rng(0, "s", 2))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert RandomSchedule().order(1, sizes, numpy_rng(0, "s", 1)) == a


def plain_loop(net, data, generator, batch_size, epochs, lr):
    """What a researcher would write in plain PyTorch."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(net(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_lightning_hop_equals_plain_pytorch_loop_bitwise():
    data = make_participants([37])[0]
    module = make_module()
    net = copy.deepcopy(module.net)
    stats = LightningHop(batch_size=8, local_epochs=2)(module, data, torch_generator(0, "h"))
    plain_loop(net, data, torch_generator(0, "h"), batch_size=8, epochs=2, lr=0.1)
    for a, b in zip(module.net.parameters(), net.parameters()):
        assert torch.equal(a, b)
    assert stats.steps == 10 and stats.samples == 74


def test_local_steps_is_exact_and_wraps_epochs():
    data = make_participants([20])[0]
    stats = LightningHop(batch_size=8, local_steps=7)(make_module(), data, torch_generator(0, "h"))
    assert stats.steps == 7 and stats.samples == 7 * 8 - 2 * 4  # 3 batches/epoch: 8, 8, 4


def test_bad_hop_settings():
    with pytest.raises(ConfigError, match="batch_size"):
        LightningHop(batch_size=0)
    with pytest.raises(ConfigError, match="local_epochs"):
        LightningHop(local_epochs=0)
    with pytest.raises(ConfigError, match="local_steps"):
        LightningHop(local_steps=0)


class Recorder(Observer):
    def __init__(self):
        self.events = []

    def on_run_start(self, info):
        self.events.append(("start", info["total_hops"]))

    def on_hop(self, record):
        self.events.append(("hop", record.hop, record.round, record.participant))

    def on_round(self, record):
        self.events.append(("round", record.round, record.hops))

    def on_run_end(self, result):
        self.events.append(("end", result.hops))


def test_relay_runner_visits_everyone_each_round_and_reports():
    parts = make_participants([10, 30, 20])
    val = EvalSet(torch.randn(50, 1, 8), torch.randint(0, 2, (50,)))
    rec = Recorder()
    runner = RelayRunner(
        LightningHop(batch_size=8),
        LargestFirstSchedule(),
        rounds=2,
        seed=0,
        eval_every=4,
        observers=[rec],
    )
    model = make_module()
    before = [p.clone() for p in model.parameters()]
    result = runner.run(model, parts, val, val)
    assert [e[3] for e in rec.events if e[0] == "hop"] == [1, 2, 0, 1, 2, 0]
    assert rec.events[0] == ("start", 6) and rec.events[-1] == ("end", 6)
    assert [e for e in rec.events if e[0] == "round"] == [("round", 1, 3), ("round", 2, 6)]
    assert result.hops == 6 and result.rounds == 2 and result.samples_seen == 120
    tested = [r.hop for r in result.history if r.test_acc is not None]
    assert tested == [4, 6]  # every 4th hop and the last
    assert result.test_acc == result.history[-1].test_acc
    # the caller's model is not modified; the result holds the trained copy
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, result.model.parameters()))


def test_relay_is_deterministic():
    parts = make_participants([15, 15, 15])
    val = EvalSet(torch.randn(30, 1, 8), torch.randint(0, 2, (30,)))

    def run():
        runner = RelayRunner(LightningHop(batch_size=4), RandomSchedule(), rounds=2, seed=5)
        return runner.run(make_module(), parts, val, val)

    a, b = run(), run()
    assert [r.val_loss for r in a.history] == [r.val_loss for r in b.history]
    assert [r.participant for r in a.history] == [r.participant for r in b.history]


def test_relay_rejects_bad_rounds():
    with pytest.raises(ConfigError, match="rounds"):
        RelayRunner(LightningHop(), RingSchedule(), rounds=0, seed=0)


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8), (3, 32, 32)])
def test_cnn_handles_1d_and_2d_inputs(shape):
    net = CNN(shape, 10)
    assert net(torch.randn(2, *shape)).shape == (2, 10)
