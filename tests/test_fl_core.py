"""Federated baselines against hand computations and plain PyTorch: FedAvg, FedProx, SCAFFOLD,
local, centralized; and the shared cost axes (bytes, simulated time)."""

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from derelayl.algorithms.baselines import CentralizedRunner, LocalRunner
from derelayl.algorithms.fl.runner import FederatedRunner, resolve_clients_per_round
from derelayl.algorithms.fl.strategies import FedAvg, FedProx, Scaffold
from derelayl.algorithms.relay import RelayRunner
from derelayl.algorithms.schedules import RingSchedule
from derelayl.data.participants import ParticipantData
from derelayl.learning.evaluation import EvalSet
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import MLP
from derelayl.sim.devices import DeviceProfile, Devices, model_bytes, parameter_bytes
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng, torch_generator

LR = 0.1


def make_participants(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for pid, n in enumerate(sizes):
        x = torch.randn(n, 1, 6, generator=gen) + 0.3 * pid
        y = (x.sum(dim=(1, 2)) > 0.5 * pid).long()
        out.append(ParticipantData(pid, x, y))
    return out


def make_module(seed=0, lr=LR, momentum=0.0, hidden=(8,)):
    torch.manual_seed(seed)
    return ClassifierModule(
        MLP((1, 6), 2, hidden=hidden), functools.partial(torch.optim.SGD, lr=lr, momentum=momentum)
    )


VAL = EvalSet(
    torch.randn(40, 1, 6, generator=torch.Generator().manual_seed(9)),
    torch.randint(0, 2, (40,), generator=torch.Generator().manual_seed(9)),
)


def run_fl(
    strategy, parts, *, clients=None, rounds=1, batch_size=4, epochs=1, seed=0, devices=None, **kw
):
    runner = FederatedRunner(
        LightningHop(batch_size=batch_size, local_epochs=epochs),
        strategy,
        seed=seed,
        clients_per_round=clients or len(parts),
        rounds=rounds,
        devices=devices,
        **kw,
    )
    return runner.run(make_module(), parts, VAL, VAL)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_one_fedavg_round_is_the_sample_weighted_mean_by_hand():
    parts = make_participants([6, 10])
    # full-batch, one epoch: each client makes exactly one plain SGD step from w0
    result = run_fl(FedAvg(), parts, batch_size=64)
    w0 = make_module().net
    expected = {k: torch.zeros_like(v) for k, v in w0.state_dict().items()}
    for p in parts:
        net = copy.deepcopy(w0)
        F.cross_entropy(net(p.x), p.y).backward()
        for (k, v), param in zip(net.state_dict().items(), net.parameters()):
            expected[k] += (len(p) / 16) * (v - LR * param.grad)
    for k, v in result.model.net.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-6)
    assert result.rounds == 1 and result.hops == 2 and result.samples_seen == 16


def test_fedavg_with_one_client_is_plain_local_training_bitwise():
    parts = make_participants([23])
    result = run_fl(FedAvg(), parts, rounds=3, epochs=2, batch_size=4)
    net = copy.deepcopy(make_module().net)
    for rnd in range(1, 4):  # what a researcher writes: a fresh SGD each round, same batches
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        gen = torch_generator(0, "hop", rnd, 0)
        for _ in range(2):
            perm = torch.randperm(23, generator=gen)
            for start in range(0, 23, 4):
                idx = perm[start : start + 4]
                loss = F.cross_entropy(net(parts[0].x[idx]), parts[0].y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert same(result.model.net, net)


def test_fedprox_with_mu_zero_is_fedavg_and_mu_pulls_towards_the_global_model():
    parts = make_participants([12, 9, 15, 7])
    a = run_fl(FedAvg(), parts, clients=2, rounds=3)
    b = run_fl(FedProx(mu=0.0), parts, clients=2, rounds=3)
    assert same(a.model, b.model)
    assert [r.metrics for r in a.history] == [r.metrics for r in b.history]
    # one round: a strong proximal term keeps the new model closer to the initial one
    w0 = torch.nn.utils.parameters_to_vector(make_module().parameters())
    dist = {
        mu: (
            torch.nn.utils.parameters_to_vector(
                run_fl(FedProx(mu=mu), parts, epochs=3).model.parameters()
            )
            - w0
        )
        .norm()
        .item()
        for mu in (0.0, 1.0)
    }
    assert dist[1.0] < dist[0.0]


def test_scaffold_control_variates_start_at_zero_and_follow_option_two():
    parts = make_participants([12, 9, 15, 7])
    strategy = Scaffold(local_lr=LR)
    params = list(make_module().parameters())
    strategy.start([p.detach() for p in params], 4)
    assert all(not c.any() for c in strategy.c)
    assert all(not c.any() for cs in strategy.c_clients.values() for c in cs)

    # round 1: zero control variates -> the same round as FedAvg
    r1 = run_fl(Scaffold(local_lr=LR), parts, clients=2)
    assert same(r1.model, run_fl(FedAvg(), parts, clients=2).model)

    # option II by hand after one round with clients {1, 3} of 4 (batch 4, 1 epoch)
    strategy = Scaffold(local_lr=LR)
    runner = FederatedRunner(
        LightningHop(batch_size=4), strategy, seed=0, clients_per_round=2, rounds=1
    )
    selected = runner.select(1, 4)
    runner.run(make_module(), parts, VAL, VAL)
    x0 = [p.detach() for p in make_module().parameters()]
    expected_c = [torch.zeros_like(p) for p in x0]
    for pid in range(4):
        if pid not in selected:
            assert all(not c.any() for c in strategy.c_clients[pid])
            continue
        local = make_module()
        stats = LightningHop(batch_size=4)(local, parts[pid], torch_generator(0, "hop", 1, pid))
        k = stats.steps
        assert k == -(-len(parts[pid]) // 4)
        ci = [(x - y.detach()) / (k * LR) for x, y in zip(x0, local.parameters())]  # c = c_i = 0
        for got, want in zip(strategy.c_clients[pid], ci):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for acc, c in zip(expected_c, ci):
            acc += c / 4  # c <- c + sum_i delta c_i / N
    for got, want in zip(strategy.c, expected_c):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_scaffold_correction_is_g_minus_ci_plus_c():
    model = make_module()
    strategy = Scaffold(local_lr=LR)
    params = list(model.parameters())
    strategy.start([p.detach() for p in params], 2)
    strategy.c = [torch.full_like(p, 0.5) for p in params]
    strategy.c_clients[1] = [torch.full_like(p, 0.2) for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    strategy.correction(1, params, [p.detach().clone() for p in params])()
    assert all(torch.allclose(p.grad, torch.full_like(p, 1.3)) for p in params)


def test_sample_budget_sets_rounds_and_full_participation_round_is_a_relay_round():
    parts = make_participants([10, 20, 30])
    res = run_fl(FedAvg(), parts, rounds=None, sample_budget=3 * 60)
    assert res.rounds == 3 and res.samples_seen == 180
    relay = RelayRunner(LightningHop(batch_size=4), RingSchedule(), rounds=3, seed=0)
    assert relay.run(make_module(), parts, VAL, VAL).samples_seen == res.samples_seen
    # partial participation: the run stops where its total is nearest the budget
    res = run_fl(FedAvg(), parts, clients=1, rounds=None, sample_budget=100)
    last = res.samples_seen - res.history[-2].samples_seen
    assert abs(res.samples_seen - 100) <= last / 2
    assert res.history[-2].samples_seen + last / 2 < 100


def test_bytes_and_simulated_time_axes():
    parts = make_participants([10, 20, 30])
    devices = Devices(
        speed=(10.0, 20.0, 5.0), bandwidth=(1000.0, 2000.0, 4000.0), server_speed=100.0
    )
    mb, pb = model_bytes(make_module()), parameter_bytes(make_module())
    assert mb == pb == 4 * (6 * 8 + 8 + 8 * 2 + 2)

    res = run_fl(FedAvg(), parts, rounds=2, devices=devices)
    assert res.bytes == 2 * 3 * 2 * mb
    per_client = [
        2 * mb / bw + n / s for n, s, bw in zip((10, 20, 30), devices.speed, devices.bandwidth)
    ]
    assert res.sim_time_s == pytest.approx(2 * max(per_client))  # waits for the slowest
    sc = run_fl(Scaffold(local_lr=LR), parts, rounds=1, devices=devices)
    assert sc.bytes == 3 * (2 * mb + 2 * pb)

    relay = RelayRunner(
        LightningHop(batch_size=4), RingSchedule(), rounds=1, seed=0, devices=devices
    ).run(make_module(), parts, VAL, VAL)
    assert relay.bytes == 3 * mb and [r.bytes for r in relay.history] == [mb, 2 * mb, 3 * mb]
    assert relay.sim_time_s == pytest.approx(
        sum(mb / bw + n / s for n, s, bw in zip((10, 20, 30), devices.speed, devices.bandwidth))
    )  # one hop after another

    local = LocalRunner(LightningHop(batch_size=4), seed=0, rounds=1, devices=devices).run(
        make_module(), parts, VAL, VAL
    )
    assert local.bytes == 0 and local.sim_time_s == pytest.approx(6.0)  # slowest: 30 / 5
    central = CentralizedRunner(LightningHop(batch_size=4), seed=0, rounds=1, devices=devices).run(
        make_module(), parts, VAL, VAL
    )
    data_bytes = [p.x.numel() * 4 + p.y.numel() * 8 for p in parts]
    assert central.bytes == sum(data_bytes)
    assert central.sim_time_s == pytest.approx(
        max(b / bw for b, bw in zip(data_bytes, devices.bandwidth)) + 60 / 100.0
    )


def test_local_reports_mean_worst_and_best_participant():
    parts = make_participants([10, 20, 30])
    res = LocalRunner(LightningHop(batch_size=4), seed=0, rounds=2).run(
        make_module(), parts, VAL, VAL
    )
    m = res.metrics
    assert m["test_acc_worst"] <= m["test_acc"] <= m["test_acc_best"]
    assert res.model is None and res.hops == 6 and res.samples_seen == 120


def test_runs_are_deterministic():
    parts = make_participants([12, 9, 15, 7])
    a = run_fl(Scaffold(local_lr=LR), parts, clients=2, rounds=3)
    b = run_fl(Scaffold(local_lr=LR), parts, clients=2, rounds=3)
    assert same(a.model, b.model)


def test_device_profile_is_seeded_heterogeneous_and_validated():
    prof = DeviceProfile()
    a = prof.draw(50, numpy_rng(0, "devices"))
    assert a == prof.draw(50, numpy_rng(0, "devices"))
    assert a != prof.draw(50, numpy_rng(1, "devices"))
    speed = np.array(a.speed)
    assert speed.min() >= 10 and speed.max() <= 2000 and speed.max() / speed.min() > 5
    flat = DeviceProfile(speed_sigma=0, bandwidth_sigma=0).draw(5, numpy_rng(0, "d"))
    assert set(flat.speed) == {100.0} and set(flat.bandwidth) == {1.25e6}
    with pytest.raises(ConfigError, match="speed_median must be > 0"):
        DeviceProfile(speed_median=0)
    with pytest.raises(ConfigError, match="bandwidth_sigma must be >= 0"):
        DeviceProfile(bandwidth_sigma=-1)


def test_bad_federated_settings():
    with pytest.raises(ConfigError, match="algorithm.mu must be >= 0"):
        FedProx(mu=-0.1)
    with pytest.raises(ConfigError, match="clients_per_round must be in 1..20"):
        resolve_clients_per_round(20, 0, 0.1)
    with pytest.raises(ConfigError, match="clients_per_round must be in 1..20"):
        resolve_clients_per_round(20, 21, None)
    with pytest.raises(ConfigError, match="client_fraction must be in"):
        resolve_clients_per_round(20, None, 0.0)
    assert resolve_clients_per_round(20, None, 0.1) == 2
    assert resolve_clients_per_round(5, None, 0.1) == 1
    with pytest.raises(ConfigError, match="server_lr must be > 0"):
        FedAvg(server_lr=0)
    with pytest.raises(ConfigError, match="rounds or a sample budget"):
        FederatedRunner(LightningHop(), FedAvg(), seed=0, clients_per_round=1)
