"""A round's hops as one batched computation give the sequential hops' weights (to float32
rounding)."""

import copy
import functools

import pytest
import torch

from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop, StackedData, evaluate_many, stack_states
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import CNN, MLP
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import torch_generator

TOL = 1e-4


def participants(sizes, shape=(1, 8, 8), classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        ParticipantData(
            i, torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)
        )
        for i, n in enumerate(sizes)
    ]


def module(net, optimizer=None):
    optimizer = optimizer or functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    return ClassifierModule(net, optimizer)


def sequential(mod, states, parts, pids, hop, corrections=None):
    out = []
    for k, (state, pid) in enumerate(zip(states, pids)):
        m = copy.deepcopy(mod)
        m.load_state_dict(state)
        corr = corrections(k, list(m.parameters())) if corrections else None
        stats = hop(m, parts[pid], torch_generator(0, "hop", 1, pid), grad_correction=corr)
        out.append(({n: p.detach().clone() for n, p in m.named_parameters()}, stats))
    return out


def batched(mod, states, parts, pids, hop, correction=None):
    names = [n for n, _ in mod.named_parameters()]
    stacked = stack_states(states, names, "cpu")
    stats = hop(
        mod,
        stacked,
        StackedData.of(parts),
        pids,
        [torch_generator(0, "hop", 1, p) for p in pids],
        correction=correction,
    )
    return names, stacked, stats


def assert_same(seq, names, stacked, stats):
    for k, (weights, st) in enumerate(seq):
        for j, name in enumerate(names):
            assert torch.allclose(stacked[j][k], weights[name], atol=TOL, rtol=0), (k, name)
        assert (stats[k].samples, stats[k].steps) == (st.samples, st.steps)
        assert stats[k].train_loss == pytest.approx(st.train_loss, abs=TOL)


@pytest.mark.parametrize(
    "net, shape, opt",
    [
        (lambda s: MLP(s, 10), (1, 8, 8), None),
        (lambda s: CNN(s, 10), (1, 8, 8), None),
        (lambda s: CNN(s, 10, channels=(4, 8), hidden=16), (1, 40), None),
        (lambda s: MLP(s, 10), (1, 8, 8), functools.partial(torch.optim.Adam, lr=1e-3)),
        (
            lambda s: MLP(s, 10, hidden=(32, 16)),
            (1, 8, 8),
            functools.partial(
                torch.optim.SGD, lr=0.1, momentum=0.5, weight_decay=1e-3, nesterov=True
            ),
        ),
    ],
)
def test_uneven_participants_match_the_sequential_hop(net, shape, opt):
    torch.manual_seed(0)
    mod = module(net(shape), opt)
    parts = participants([37, 5, 64, 16, 1, 50], shape=shape)
    pids = [2, 0, 5, 1, 4, 3, 0]  # a participant may train several models (DeRelayL owners' k)
    g = torch.Generator().manual_seed(1)
    states = [
        {
            n: p.detach() + 0.01 * torch.randn(p.shape, generator=g)
            for n, p in mod.named_parameters()
        }
        for _ in pids
    ]
    seq = sequential(mod, states, parts, pids, LightningHop(batch_size=16, local_epochs=3))
    names, stacked, stats = batched(
        mod, states, parts, pids, BatchedHop(batch_size=16, local_epochs=3)
    )
    assert_same(seq, names, stacked, stats)


class MeanOnlyModule(ClassifierModule):
    """A module that defines only training_step (no per_sample_loss): the generic path."""

    per_sample_loss = None


def test_a_module_without_per_sample_loss_uses_its_training_step():
    torch.manual_seed(0)
    mod = MeanOnlyModule(MLP((1, 8, 8), 10), functools.partial(torch.optim.SGD, lr=0.05))
    parts = participants([13, 29])
    states = [mod.state_dict()] * 2
    seq = sequential(mod, states, parts, [0, 1], LightningHop(batch_size=8, local_epochs=2))
    names, stacked, stats = batched(
        mod, states, parts, [0, 1], BatchedHop(batch_size=8, local_epochs=2)
    )
    assert_same(seq, names, stacked, stats)


def test_local_steps_budget_matches():
    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10))
    parts = participants([7, 40, 23])
    states = [mod.state_dict()] * 3
    seq = sequential(mod, states, parts, [0, 1, 2], LightningHop(batch_size=8, local_steps=5))
    names, stacked, stats = batched(
        mod, states, parts, [0, 1, 2], BatchedHop(batch_size=8, local_steps=5)
    )
    assert [s.steps for s in stats] == [5, 5, 5]
    assert_same(seq, names, stacked, stats)


def test_gradient_corrections_act_per_model():
    """FedProx's proximal term and SCAFFOLD's control variates, applied to stacked gradients."""
    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10), functools.partial(torch.optim.SGD, lr=0.05))
    parts = participants([30, 12, 45])
    pids = [0, 1, 2]
    anchor = [p.detach().clone() for p in mod.parameters()]
    g = torch.Generator().manual_seed(2)
    shift = [[0.1 * torch.randn(p.shape, generator=g) for p in anchor] for _ in pids]
    mu = 0.3

    def per_model(k, params):
        def correct():
            with torch.no_grad():
                for p, a, s in zip(params, anchor, shift[k]):
                    p.grad.add_(p - a, alpha=mu).add_(s)

        return correct

    def stacked_correction(params, grads):
        with torch.no_grad():
            for j, (p, gr) in enumerate(zip(params, grads)):
                gr.add_(p - anchor[j], alpha=mu).add_(torch.stack([s[j] for s in shift]))

    states = [mod.state_dict()] * 3
    seq = sequential(
        mod, states, parts, pids, LightningHop(batch_size=10, local_epochs=2), corrections=per_model
    )
    names, stacked, stats = batched(
        mod,
        states,
        parts,
        pids,
        BatchedHop(batch_size=10, local_epochs=2),
        correction=stacked_correction,
    )
    assert_same(seq, names, stacked, stats)


@pytest.mark.parametrize("net", ["mlp", "cnn"])  # vmapped; on a CPU one model at a time
def test_evaluate_many_matches_evaluate(net):
    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10) if net == "mlp" else CNN((1, 8, 8), 10))
    names = [n for n, _ in mod.named_parameters()]
    g = torch.Generator().manual_seed(3)
    states = [
        {n: p.detach() + 0.5 * torch.randn(p.shape, generator=g) for n, p in mod.named_parameters()}
        for _ in range(4)
    ]
    data = EvalSet(
        torch.randn(300, 1, 8, 8, generator=g), torch.randint(0, 10, (300,), generator=g)
    )
    losses, accs = evaluate_many(
        mod, stack_states(states, names, "cpu"), data.x, data.y, batch_size=128
    )
    for k, state in enumerate(states):
        m = copy.deepcopy(mod)
        m.load_state_dict(state)
        loss, acc = evaluate(m, data)
        assert float(losses[k]) == pytest.approx(loss, rel=1e-6, abs=1e-5)  # float32 sums
        assert float(accs[k]) == pytest.approx(acc, abs=1e-9)


def test_unsupported_modules_are_refused_in_one_line():
    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10, dropout=0.5))
    parts = participants([10])
    with pytest.raises(ConfigError, match="dropout"):
        batched(mod, [mod.state_dict()], parts, [0], BatchedHop(batch_size=4))
    bn = module(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(64), torch.nn.Linear(64, 10))
    )
    with pytest.raises(ConfigError, match="buffers"):
        batched(bn, [bn.state_dict()], parts, [0], BatchedHop(batch_size=4))


def test_lineage_replays_in_a_batch_give_the_one_by_one_values_and_shapley():
    from derelayl.sim.seeding import numpy_rng
    from derelayl.valuation.coalitions import LineageCoalitionValue
    from derelayl.valuation.shapley import _all_coalitions, shapley_values

    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10))
    parts = participants([20, 33, 8, 41, 17])
    g = torch.Generator().manual_seed(5)
    test = EvalSet(
        torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 10, (200,), generator=g)
    )
    lineage = [(0, 1), (1, 3), (2, 1), (3, 0), (4, 4), (5, 3), (6, 2)]
    one = LineageCoalitionValue(
        LightningHop(batch_size=8, local_epochs=2), mod, lineage, parts, seed=0, test=test
    )
    many = LineageCoalitionValue(
        LightningHop(batch_size=8, local_epochs=2),
        mod,
        lineage,
        parts,
        seed=0,
        test=test,
        batched=BatchedHop(batch_size=8, local_epochs=2),
        max_batch=7,
    )
    coalitions = _all_coalitions(one.players)
    assert many.many(coalitions) == pytest.approx([one(c) for c in coalitions], abs=1e-9)
    naive = sum(sum(p in c for _, p in lineage) for c in coalitions)
    assert many.hops < naive  # coalitions that agree so far share one replay
    for exact_max in (8, 0):  # exact enumeration, and truncated Monte Carlo
        a = shapley_values(
            one.players,
            one,
            exact_max=exact_max,
            permutations=30,
            tolerance=0.01,
            rng=numpy_rng(0, "shapley"),
        )
        b = shapley_values(
            many.players,
            many,
            exact_max=exact_max,
            permutations=30,
            tolerance=0.01,
            rng=numpy_rng(0, "shapley"),
        )
        assert a.values == pytest.approx(b.values, abs=1e-12)
        assert (a.method, a.permutations, a.converged) == (b.method, b.permutations, b.converged)


def test_batched_lineage_replays_train_once_per_group_of_coalitions_that_agree_so_far():
    """At hop i, coalitions with the same members among the participants seen up to i hold the
    same weights: one of them trains and the others take its result. Lineage a, b, a, c over
    the 8 coalitions of {a, b, c}: 1 + 2 + 2 + 4 = 9 hops trained instead of 4 x 4 = 16, and
    every coalition's value is the one-by-one replay's."""
    from derelayl.learning.evaluation import EvalSet
    from derelayl.valuation.coalitions import LineageCoalitionValue
    from derelayl.valuation.shapley import _all_coalitions

    torch.manual_seed(0)
    mod = module(MLP((1, 8, 8), 10))
    parts = participants([20, 33, 8])
    g = torch.Generator().manual_seed(5)
    test = EvalSet(
        torch.randn(100, 1, 8, 8, generator=g), torch.randint(0, 10, (100,), generator=g)
    )
    lineage = [(0, 0), (1, 1), (2, 0), (3, 2)]
    kwargs = dict(seed=0, test=test, cache_bytes=0)
    one = LineageCoalitionValue(LightningHop(batch_size=8), mod, lineage, parts, **kwargs)
    many = LineageCoalitionValue(
        LightningHop(batch_size=8), mod, lineage, parts, batched=BatchedHop(batch_size=8), **kwargs
    )
    coalitions = _all_coalitions(one.players)
    assert len(coalitions) == 8
    assert many.many(coalitions) == pytest.approx([one(c) for c in coalitions], abs=1e-9)
    assert (many.hops, one.hops) == (9, 16)
