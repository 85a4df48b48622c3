"""The FL strategies and robust aggregators against independent reference computations."""

import copy
import functools

import numpy as np
import pytest
import torch

from derelayl.algorithms.fl.aggregators import coordinate_median, krum_index, trimmed_mean
from derelayl.algorithms.fl.runner import FederatedRunner
from derelayl.algorithms.fl.strategies import FedAdam, FedAvg, FedNova
from derelayl.data.participants import ParticipantData
from derelayl.learning.evaluation import EvalSet
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import MLP
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import torch_generator

LR = 0.1


def clients(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        ParticipantData(
            i, torch.randn(n, 1, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
        )
        for i, n in enumerate(sizes)
    ]


def module(momentum=0.0):
    torch.manual_seed(0)
    return ClassifierModule(
        MLP((1, 6), 3, hidden=(8,)), functools.partial(torch.optim.SGD, lr=LR, momentum=momentum)
    )


VAL = EvalSet(
    torch.randn(20, 1, 6, generator=torch.Generator().manual_seed(9)),
    torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(9)),
)


def local_models(mod, parts, hop, rnd=1):
    """Each client's model after its hop from the same global weights (the reference)."""
    out = []
    for p in parts:
        m = copy.deepcopy(mod)
        stats = hop(m, p, torch_generator(0, "hop", rnd, p.pid))
        out.append(([t.detach().clone() for t in m.state_dict().values()], stats.steps))
    return out


def run_round(strategy, mod, parts, hop, rounds=1):
    runner = FederatedRunner(hop, strategy, seed=0, clients_per_round=len(parts), rounds=rounds)
    return runner.run(mod, parts, VAL, VAL).model


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fednova_normalises_each_client_by_its_local_steps(momentum):
    mod = module(momentum)
    parts = clients([8, 40, 21])  # different sizes: different local steps
    hop = LightningHop(batch_size=4, local_epochs=2)
    x = [t.detach().clone() for t in mod.state_dict().values()]
    ys = local_models(mod, parts, hop)
    p = np.array([len(c) for c in parts], dtype=float)
    p /= p.sum()
    rho = momentum
    a = [s if rho == 0 else (s - rho * (1 - rho**s) / (1 - rho)) / (1 - rho) for _, s in ys]
    tau_eff = float(np.dot(p, a))
    want = [
        xj - tau_eff * sum(pi * (xj - y[j]) / ai for pi, ai, (y, _) in zip(p, a, ys))
        for j, xj in enumerate(x)
    ]
    got = run_round(FedNova(momentum=momentum), mod, parts, hop).state_dict().values()
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6)
    # with equal steps everywhere FedNova is FedAvg
    same = clients([16, 16, 16])
    assert all(
        torch.allclose(u, v, atol=1e-6)
        for u, v in zip(
            run_round(FedNova(momentum=momentum), mod, same, hop).state_dict().values(),
            run_round(FedAvg(), mod, same, hop).state_dict().values(),
        )
    )


def test_fedadam_is_adam_on_the_mean_update():
    mod = module()
    parts = clients([12, 30])
    hop = LightningHop(batch_size=4)
    eta, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    p = np.array([12, 30], dtype=float) / 42
    x = [t.detach().clone() for t in mod.state_dict().values()]
    m = [torch.zeros_like(t) for t in x]
    v = [torch.zeros_like(t) for t in x]
    ref = copy.deepcopy(mod)
    for rnd in (1, 2):
        ys = local_models(ref, parts, hop, rnd)
        for j in range(len(x)):
            delta = sum(pi * y[j] for pi, (y, _) in zip(p, ys)) - x[j]
            m[j] = b1 * m[j] + (1 - b1) * delta
            v[j] = b2 * v[j] + (1 - b2) * delta * delta
            x[j] = x[j] + eta * m[j] / (v[j].sqrt() + tau)
        ref.load_state_dict(dict(zip(ref.state_dict(), x)))
    got = (
        run_round(FedAdam(server_lr=eta, beta1=b1, beta2=b2, tau=tau), mod, parts, hop, rounds=2)
        .state_dict()
        .values()
    )
    for g, w in zip(got, x):
        assert torch.allclose(g, w, atol=1e-5)


def test_robust_aggregators_match_numpy():
    rng = np.random.default_rng(0)
    states = [
        [
            torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32),
            torch.tensor(rng.normal(size=5), dtype=torch.float32),
            torch.tensor([7]),
        ]
        for _ in range(7)
    ]
    template = states[0]
    arr = [np.stack([s[j].numpy() for s in states]) for j in range(2)]
    med = coordinate_median(states, template)
    for j in range(2):
        assert np.allclose(med[j].numpy(), np.median(arr[j], axis=0), atol=1e-6)
    assert torch.equal(med[2], torch.tensor([7]))  # not a float: left as it is
    tm = trimmed_mean(states, template, beta=0.2)  # floor(0.2 * 7) = 1 from each end
    for j in range(2):
        ref = np.sort(arr[j], axis=0)[1:6].mean(axis=0)
        assert np.allclose(tm[j].numpy(), ref, atol=1e-6)
    flat = np.stack([np.concatenate([s[0].numpy().ravel(), s[1].numpy()]) for s in states])
    f = 2
    d = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    scores = [np.sort(np.delete(d[i], i))[: 7 - f - 2].sum() for i in range(7)]
    assert krum_index(states, f) == int(np.argmin(scores))


def test_krum_and_median_ignore_a_wild_client():
    """A client whose model is far off wins nothing under krum and moves the median little."""
    mod = module()
    parts = clients([10, 10, 10, 10, 10])
    hop = LightningHop(batch_size=5)
    ys = local_models(mod, parts, hop)
    wild = [t + 100.0 if t.is_floating_point() else t for t in ys[0][0]]
    states = [wild] + [y for y, _ in ys[1:]]
    chosen = krum_index(states, f=1)
    assert chosen != 0
    med = coordinate_median(states, states[1])
    honest_mean = [sum(s[j] for s in states[1:]) / 4 for j in range(len(wild))]
    assert all(
        float((m - h).abs().max()) < 10 for m, h in zip(med, honest_mean) if m.is_floating_point()
    )


def test_bad_strategy_values_are_one_line():
    with pytest.raises(ConfigError, match="aggregator"):
        FedAvg(aggregator="mode")
    with pytest.raises(ConfigError, match="beta1"):
        FedAdam(beta1=1.0)
    with pytest.raises(ConfigError, match="momentum"):
        FedNova(momentum=1.0)
    with pytest.raises(ConfigError, match="aggregator=mean"):
        FedNova(aggregator="median")
