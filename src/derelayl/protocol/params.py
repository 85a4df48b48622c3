"""The protocol's constants (SPEC section 2): one frozen record, checked once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from derelayl.sim.errors import ConfigError

DEPOSIT_RECORDS = ("pair", "deposit")
NO_WINNER_RULES = ("keep_owners", "reset")


@dataclass(frozen=True)
class DeRelayLParams:
    """Every protocol constant; defaults are the authors' simulation values (and the config's:
    ``derelayl.*`` takes its defaults from here, ``derelayl.app.config``)."""

    num_participants: int = 256
    rounds: int = 30  # ours; the authors simulate 100 (versions) and 5,000 (coins)
    active_share: float = 0.5  # (model owners + trainers) / N
    trainers_per_owner: int = 4  # k
    owner_budget: float = 0.001
    winner_share: float = 0.5  # s: the best floor(s * #trained) models win
    dropout: float = 0.1
    num_test_cases: int = 100
    royalty: float = 1.0  # coins to the owner of every model on a winner's lineage
    fee_per_deposit: float = 0.001  # deposit block, per deposit record
    # what a deposit record is: "pair" (the authors': one record per matched owner-trainer pair,
    # holding both deposits) or "deposit" (ours before: one per deposit, two per pair)
    deposit_records: str = "pair"
    fee_per_commitment: float = 0.001  # commitment block, per model hash
    fee_per_test_case: float = 0.001  # testing block, per case ...
    fee_per_tested_hash: float = 0.001  # ... and per model hash
    fee_per_ranked_model: float = 0.001  # settlement block, per model ...
    fee_per_model_case: float = 0.001  # ... and per model x case
    genesis_participant: int = 0
    version_depth: int = 10  # version shares: latest, latest-1 .. latest-depth, older, none
    # participants taking part at the start (0: all); with churn the rest are the join pool
    initial_active: int = 0
    # verification (our extension; None = the authors' protocol): a model is eligible to win
    # only if its score is at least its parent's score on the same test cases minus this margin
    acceptance_margin: float | None = None
    # a round in which no model wins: "keep_owners" (ours: last round's owners stay owners and
    # try again next round) or "reset" (the authors' code: the owner list is rebuilt from the
    # winners, so it is left empty and the economy stops)
    no_winner: str = "keep_owners"

    def __post_init__(self):
        n = self.initial_active or self.num_participants
        if self.rounds < 1:
            raise ConfigError(f"derelayl.rounds must be >= 1 (got {self.rounds})")
        if not 0 < self.winner_share <= 1:
            raise ConfigError(
                f"derelayl.winner_share (s) must be in (0, 1] (got {self.winner_share})"
            )
        if self.trainers_per_owner < 1:
            raise ConfigError(
                f"derelayl.trainers_per_owner (k) must be >= 1 (got {self.trainers_per_owner})"
            )
        if not 0 < self.active_share < 1:
            raise ConfigError(
                f"derelayl.active_share (owners + trainers share) must be in (0, 1) "
                f"(got {self.active_share})"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"derelayl.dropout must be in [0, 1) (got {self.dropout})")
        if self.num_test_cases < 1:
            raise ConfigError(f"derelayl.num_test_cases must be >= 1 (got {self.num_test_cases})")
        active = int(self.active_share * n)
        if active < 2 or n - active < 1:
            raise ConfigError(
                f"num_participants={n} is too small for the roles: with active_share="
                f"{self.active_share} there must be at least one owner, one trainer and one miner "
                f"(need int(active_share * N) >= 2 and N - int(active_share * N) >= 1)"
            )
        if self.acceptance_margin is not None and self.acceptance_margin < 0:
            raise ConfigError(
                f"derelayl.acceptance_margin must be >= 0 or null (got {self.acceptance_margin})"
            )
        if self.deposit_records not in DEPOSIT_RECORDS:
            raise ConfigError(
                f"derelayl.deposit_records must be one of "
                f"{', '.join(DEPOSIT_RECORDS)} (got {self.deposit_records!r})"
            )
        if self.no_winner not in NO_WINNER_RULES:
            raise ConfigError(
                f"derelayl.no_winner must be one of {', '.join(NO_WINNER_RULES)} "
                f"(got {self.no_winner!r})"
            )
        if self.initial_active > self.num_participants:
            raise ConfigError("initial_active exceeds num_participants")
        if not 0 <= self.genesis_participant < n:
            raise ConfigError(
                f"derelayl.genesis_participant must be in [0, {n}) (got {self.genesis_participant})"
            )
        for f in fields(self):
            money = f.name.startswith("fee_") or f.name in ("owner_budget", "royalty")
            if money and getattr(self, f.name) < 0:
                raise ConfigError(f"derelayl.{f.name} must be >= 0 (got {getattr(self, f.name)})")
