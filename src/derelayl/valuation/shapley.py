"""Shapley values of cooperative games: the fairness reference for the incentive schemes.

A game is a set of players and a value function ``U(S)`` over coalitions (frozensets of
players). The Shapley value of player i is its marginal contribution averaged over all orders:

    phi_i = sum over S subset of N \\ {i} of |S|! (n - |S| - 1)! / n! * (U(S + i) - U(S))

It is the only attribution with efficiency (sum phi = U(N) - U(empty)), symmetry, null player
(phi = 0 when U(S + i) = U(S) for every S) and additivity.

- ``exact_shapley`` enumerates the 2^n coalitions (refused beyond ``max_players``).
- ``tmc_shapley`` is truncated Monte Carlo permutation sampling (Ghorbani & Zou, ICML 2019): each
  sampled order is scanned prefix by prefix; once ``|U(N) - U(prefix)| < tolerance`` the rest of
  the order is truncated (its marginals count 0, no more evaluations); sampling stops when the
  estimates' mean relative change over the last ``window`` permutations is below ``convergence``.
- ``shapley_values`` picks exact enumeration for at most ``exact_max`` players, TMC beyond.

Every evaluation goes through ``CachedValue``: each coalition is evaluated at most once. A value
function that can evaluate many coalitions in one batched computation (a ``many(coalitions)``
method, e.g. DeRelayL's lineage replayed for a batch of coalitions in lockstep) is asked for them
in batches: every coalition when there are at most ``2^prefetch_players`` of them, else the
prefixes of each block of sampled permutations, a few positions at a time (``PREFETCH_WAVE``)
and only for the orders not truncated yet. The estimates are those of the one-by-one
computation (the same coalitions' values enter the same formulas); only a few extra coalitions
may be evaluated (prefixes of a wave past a truncation), which costs less than the lost
batching.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from derelayl.sim.errors import ConfigError

Player = Hashable
ValueFunction = Callable[[frozenset], float]
Numbers = Sequence[float] | np.ndarray


class BatchedValueFunction(Protocol):
    """A value function that also evaluates many coalitions at once (``CachedValue.batched``)."""

    def __call__(self, coalition: frozenset) -> float: ...

    def many(self, coalitions: Sequence[frozenset]) -> Sequence[float]: ...


class CachedValue:
    """``U(S)`` memoised by coalition (a frozenset); ``evaluations`` counts real calls."""

    def __init__(self, value: ValueFunction):
        self.value: ValueFunction = value.value if isinstance(value, CachedValue) else value
        self.cache: dict[frozenset, float] = (
            dict(value.cache) if isinstance(value, CachedValue) else {}
        )
        self.evaluations = 0

    def __call__(self, coalition: Iterable[Player]) -> float:
        key = coalition if isinstance(coalition, frozenset) else frozenset(coalition)
        if key not in self.cache:
            self.cache[key] = float(self.value(key))
            self.evaluations += 1
        return self.cache[key]

    @property
    def batched(self) -> bool:
        return callable(getattr(self.value, "many", None))

    def prefetch(self, coalitions: Iterable[Iterable[Player]]) -> None:
        """Evaluate the coalitions not cached yet in one batch (values with ``many``)."""
        if not self.batched:
            return
        todo = list(dict.fromkeys(frozenset(c) for c in coalitions))
        todo = [c for c in todo if c not in self.cache]
        if todo:
            for c, v in zip(todo, cast(BatchedValueFunction, self.value).many(todo)):
                self.cache[c] = float(v)
            self.evaluations += len(todo)


PREFETCH_PLAYERS = 10  # batched values: evaluate all 2^n coalitions up front up to this n
PREFETCH_PERMUTATIONS = 20  # beyond: the prefixes of this many sampled orders at a time


PREFETCH_WAVE = 4  # prefix positions of each live order evaluated per batch


def _prefetch_prefixes(
    u: CachedValue,
    players: Sequence[Player],
    orders: Sequence[np.ndarray],
    full: float,
    empty: float,
    tolerance: float,
) -> None:
    """Evaluate, in batches, the prefixes that TMC's scan of ``orders`` will ask for: the next
    ``PREFETCH_WAVE`` positions of every order not truncated yet, then the scan's truncation
    test (as in :func:`tmc_shapley`) on the values that came back, until every order is
    truncated or complete."""
    n = len(players)
    position = [0] * len(orders)  # prefix length scanned so far
    prev = [empty] * len(orders)  # its value
    live = list(range(len(orders)))
    while live:
        u.prefetch(
            frozenset(players[j] for j in orders[b][:i])
            for b in live
            for i in range(position[b] + 1, min(position[b] + PREFETCH_WAVE, n) + 1)
        )
        still = []
        for b in live:
            for _ in range(PREFETCH_WAVE):
                if position[b] >= n or abs(full - prev[b]) < tolerance:
                    break
                position[b] += 1
                prev[b] = u(frozenset(players[j] for j in orders[b][: position[b]]))
            else:
                still.append(b)
        live = [b for b in still if position[b] < n and abs(full - prev[b]) >= tolerance]


def _all_coalitions(players: Sequence[Player]) -> list[frozenset]:
    return [
        frozenset(c) for k in range(len(players) + 1) for c in itertools.combinations(players, k)
    ]


@dataclass(frozen=True)
class ShapleyResult:
    values: dict  # player -> phi
    method: str  # "exact" or "tmc"
    permutations: int  # permutations sampled (0 for exact)
    evaluations: int  # distinct coalitions evaluated (calls of the value function)
    converged: bool  # TMC stopped on its convergence test (exact: always True)
    full_value: float  # U(all players)
    empty_value: float  # U(empty coalition)


def _players(players: Iterable[Player]) -> list:
    out = list(players)
    if len(set(out)) != len(out):
        raise ConfigError(f"shapley players must be distinct (got {out})")
    return out


def check_parameters(
    permutations: int | None = None,
    tolerance: float | None = None,
    convergence: float | None = None,
    window: int | None = None,
) -> None:
    """One-line ConfigErrors naming the config key of a bad TMC parameter."""
    if permutations is not None and (
        isinstance(permutations, bool) or not permutations >= 1 or int(permutations) != permutations
    ):
        raise ConfigError(f"shapley.permutations must be an integer >= 1 (got {permutations})")
    if tolerance is not None and not tolerance >= 0:
        raise ConfigError(f"shapley.tolerance must be >= 0 (got {tolerance})")
    if convergence is not None and not convergence >= 0:
        raise ConfigError(f"shapley.convergence must be >= 0 or null (got {convergence})")
    if window is not None and (not window >= 1 or int(window) != window):
        raise ConfigError(f"shapley.window must be an integer >= 1 (got {window})")


def exact_shapley(players: Iterable[Player], value: ValueFunction, max_players: int = 12) -> dict:
    """Exact Shapley values by enumerating every coalition (2^n value calls, each cached)."""
    players = _players(players)
    n = len(players)
    if n > max_players:
        raise ConfigError(
            f"shapley: exact enumeration of {n} players needs 2^{n} coalitions; "
            f"the limit is {max_players} (shapley.exact_max), use Monte Carlo"
        )
    u = value if isinstance(value, CachedValue) else CachedValue(value)
    u.prefetch(_all_coalitions(players))
    weights = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    phi = {p: 0.0 for p in players}
    for i, p in enumerate(players):
        others = players[:i] + players[i + 1 :]
        total = 0.0
        for k in range(n):
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                total += weights[k] * (u(s | {p}) - u(s))
        phi[p] = total
    return phi


def tmc_shapley(
    players: Iterable[Player],
    value: ValueFunction,
    permutations: int,
    tolerance: float,
    rng: np.random.Generator,
    convergence: float | None = 0.05,
    window: int = 20,
) -> ShapleyResult:
    """Truncated Monte Carlo Shapley (Ghorbani & Zou 2019).

    ``permutations`` is the most orders sampled; ``tolerance`` the truncation threshold on
    ``|U(N) - U(prefix)|`` (0 never truncates except on an exact tie); ``convergence`` (None to
    always sample ``permutations``) stops once, after at least ``window`` permutations,
    mean_i |phi_i(t) - phi_i(t - window)| / |phi_i(t)| < convergence, where players whose
    estimate and change are both 0 count 0 and a change on a zero estimate counts as infinite.
    """
    check_parameters(permutations, tolerance, convergence, window)
    players = _players(players)
    n = len(players)
    u = value if isinstance(value, CachedValue) else CachedValue(value)
    start = u.evaluations
    if u.batched and n <= PREFETCH_PLAYERS:
        u.prefetch(_all_coalitions(players))
    full, empty = u(frozenset(players)), u(frozenset())
    if n == 0:
        return ShapleyResult({}, "tmc", 0, u.evaluations - start, True, full, empty)
    sums = np.zeros(n)
    history: list[np.ndarray] = []
    converged = False
    t = 0
    drawn: list[np.ndarray] = []
    for t in range(1, int(permutations) + 1):
        if not drawn:  # the next orders, drawn as the one-by-one loop draws them
            block = min(PREFETCH_PERMUTATIONS if u.batched else 1, int(permutations) - t + 1)
            drawn = [rng.permutation(n) for _ in range(block)]
            if u.batched:
                _prefetch_prefixes(u, players, drawn, full, empty, tolerance)
        order = drawn.pop(0)
        prefix: set = set()
        prev = empty
        for j in order:
            if abs(full - prev) < tolerance:
                break  # truncated: this and every later marginal counts 0
            prefix.add(players[j])
            cur = u(frozenset(prefix))
            sums[j] += cur - prev
            prev = cur
        estimate = sums / t
        history.append(estimate)
        if convergence is not None and t > window:
            old = history[t - 1 - window]
            change = np.abs(estimate - old)
            scale = np.abs(estimate)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(change == 0, 0.0, change / scale)
            if float(np.mean(rel)) < convergence:
                converged = True
                break
    values = {p: float(v) for p, v in zip(players, sums / t)}
    return ShapleyResult(values, "tmc", t, u.evaluations - start, converged, full, empty)


def shapley_values(
    players: Iterable[Player],
    value: ValueFunction,
    *,
    exact_max: int = 8,
    permutations: int = 500,
    tolerance: float = 0.0,
    rng: np.random.Generator | None = None,
    convergence: float | None = 0.05,
    window: int = 20,
) -> ShapleyResult:
    """Exact values for at most ``exact_max`` players, truncated Monte Carlo beyond.

    The TMC parameters are validated even when exact enumeration is used, so a bad config fails
    the same way whatever the number of players.
    """
    check_parameters(permutations, tolerance, convergence, window)
    if not exact_max >= 0:
        raise ConfigError(f"shapley.exact_max must be >= 0 (got {exact_max})")
    players = _players(players)
    u = value if isinstance(value, CachedValue) else CachedValue(value)
    if len(players) <= exact_max:
        start = u.evaluations
        phi = exact_shapley(players, u, max_players=max(exact_max, len(players)))
        return ShapleyResult(
            phi, "exact", 0, u.evaluations - start, True, u(frozenset(players)), u(frozenset())
        )
    if rng is None:
        raise ConfigError(
            "shapley: Monte Carlo Shapley needs a seeded rng (e.g. numpy_rng(seed, 'shapley'))"
        )
    return tmc_shapley(
        players, u, permutations, tolerance, rng, convergence=convergence, window=window
    )


# -- correlation of rewards with contributions ------------------------------------------------


def _pair(x: Numbers, y: Numbers) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"pearson/spearman need two 1-d sequences of equal length "
            f"(got shapes {a.shape} and {b.shape})"
        )
    return a, b


def pearson(x: Numbers, y: Numbers) -> float:
    """Pearson correlation; nan when undefined (fewer than 2 points or a constant input)."""
    a, b = _pair(x, y)
    if len(a) < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0 or not math.isfinite(denom):
        return float("nan")
    return float(np.clip(np.dot(da, db) / denom, -1.0, 1.0))


def rankdata(x: Numbers) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span (scipy's ``average`` method)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Numbers, y: Numbers) -> float:
    """Spearman rank correlation (Pearson of average ranks); nan when undefined."""
    a, b = _pair(x, y)
    return pearson(rankdata(a), rankdata(b))
