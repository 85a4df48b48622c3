"""``derelayl-ledger verify``: a DeRelayL run folder checked against its own ledger, and the
ledger against its anchor outside the folder.

What is checked (each check reads data only: JSON, CSV, raw float64, ``.npz`` without pickle,
weights with ``torch.load(weights_only=True)``):

1. the ledger: every block's fields and types, indices, links and hashes (``core.ledger``), and
   every payload's shape (numbers finite, participant ids in range);
2. the books replayed from the blocks after every round, against ``coins.f64`` (balances after
   every round), ``rounds.jsonl`` and ``history.csv`` (coins minted, burned and held, matches,
   trained models, winners; Gini, mean and max of the coins when there is no churn),
   ``participants.csv`` (coins, matches, wins) and ``metrics.json`` (rounds, hops, coins);
3. the checkpoint (``checkpoint.npz``, if present): its balances and supply against the replay,
   its ledger head, and the stored models it needs;
4. the weights: every file in ``models/`` hashes to its name and was committed in the ledger;
   ``model.pt`` is the run's best model (the checkpoint's) or at least a committed model;
5. the anchor: the head after every round against the ``ledger/head`` series and the
   ``derelayl.ledger_head`` tag of every MLflow run the folder was tracked in
   (``mlflow_runs.json``, or ``--run-id``), a finished run's anchor must cover every round, and
   ``metrics.json`` and ``config.yaml`` must match that run's ``final/*`` metrics and params.

What it does not prove: that the numbers were *computed* correctly (accuracies, Shapley values,
the partition are not recomputed), and, without an anchor, anything beyond the folder's own
consistency (whoever can write the folder can rewrite it consistently). An anchor is only as
trustworthy as the MLflow store it lives in.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.io.anchor import head_code, heads_by_round
from derelayl.io.checkpoint import CHECKPOINT_FILE, LEGACY_PICKLE, CheckpointError
from derelayl.io.ledger_files import (
    COINS_FILE,
    LEDGER_FILE,
    MODELS_DIR,
    ROUNDS_FILE,
    read_checkpoint,
)
from derelayl.io.run_folder import read_tracked_runs
from derelayl.protocol.ledger import BLOCK_KINDS, GENESIS_HASH, balances_from_ledger, verify_chain
from derelayl.sim.stats import gini

RTOL, ATOL = 1e-9, 1e-6


class Tampered(Exception):
    """The folder is not what its ledger (or its anchor) says; the message is one line."""


class NotARun(Exception):
    """Bad input: not a DeRelayL run folder (one line; exit status 2)."""


@dataclass
class Audit:
    run_dir: Path
    run_ids: list[str] | None = None  # anchors given on the command line (else the folder's)
    tracking_uri: str | None = None
    use_anchor: bool = True
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    anchored: bool = False

    # -- entry ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Raise Tampered (or NotARun) at the first problem; fill ``checked`` and ``notes``."""
        d = self.run_dir
        if not d.is_dir():
            raise NotARun(f"{d} is not a directory")
        if not (d / LEDGER_FILE).is_file():
            raise NotARun(
                f"no {LEDGER_FILE} in {d} (not a DeRelayL run directory, or derelayl.ledger=false)"
            )
        if (d / LEGACY_PICKLE).exists():
            self.notes.append(
                f"{LEGACY_PICKLE} (an old pickled checkpoint) was not read: unpickling can run code"
            )
        self.config = _read_yaml(d / "config.yaml")
        self.blocks = read_blocks(d / LEDGER_FILE)
        if not self.blocks and self.config is None and not (d / ROUNDS_FILE).is_file():
            raise NotARun(
                f"{d / LEDGER_FILE} is empty and {d} holds no run (no config.yaml, "
                f"no {ROUNDS_FILE})"
            )
        verdict = verify_chain(self.blocks)
        if not verdict.ok:
            raise Tampered(f"block {verdict.bad_index}: {verdict.reason}")
        self.n = self._participants()
        check_payloads(self.blocks, self.n)
        self.checked.append(f"chain of {len(self.blocks)} blocks")
        self.rounds = self._settled_rounds()
        self.replay = replay_by_round(self.blocks, self.n, self.rounds)
        self._coins_file()
        self._rounds_file()
        self._history_file()
        self._participants_file()
        self._metrics_file()
        self._checkpoint()
        self._models()
        if self.use_anchor:
            self._anchor()

    # -- what the folder says it is --------------------------------------------------------------
    def _participants(self) -> int:
        cfg = self.config or {}
        try:
            n = int(cfg["num_participants"])
            churn = cfg.get("churn") or {}
            if churn.get("enabled"):
                n = int(round(n * float(churn.get("pool_factor", 1.0))))
            return n
        except (KeyError, TypeError, ValueError):
            ids = [b["writer"] for b in self.blocks]
            for b in self.blocks:
                if b["kind"] == "deposit":
                    ids += [d[0] for d in b["payload"]["deposits"]]
                    ids += [d[2] for d in b["payload"]["deposits"]]
            self.notes.append(
                "no readable config.yaml: the number of participants is inferred from the ledger"
            )
            return max(ids, default=0) + 1

    def _settled_rounds(self) -> int:
        rows = _read_jsonl(self.run_dir / ROUNDS_FILE)
        last_block = max((b["round"] + 1 for b in self.blocks), default=0)
        if rows is None:
            return last_block
        if len(rows) < last_block:
            raise Tampered(f"{ROUNDS_FILE} has {len(rows)} rounds, the ledger {last_block}")
        self.round_rows = rows
        return len(rows)

    # -- files against the replay ---------------------------------------------------------------
    def _coins_file(self) -> None:
        path = self.run_dir / COINS_FILE
        if not path.is_file():
            self.notes.append(f"no {COINS_FILE}")
            return
        raw = np.fromfile(path, dtype=np.float64)
        if raw.size != self.rounds * self.n:
            raise Tampered(
                f"{COINS_FILE} holds {raw.size} balances, {self.rounds} rounds x "
                f"{self.n} participants expected"
            )
        matrix = raw.reshape(self.rounds, self.n)
        for k in range(1, self.rounds + 1):
            replayed = self.replay[k]["coins"]
            if not np.allclose(matrix[k - 1], replayed, rtol=RTOL, atol=ATOL):
                i = int(np.argmax(np.abs(matrix[k - 1] - replayed)))
                raise Tampered(
                    f"{COINS_FILE}, round {k}: participant {i} holds "
                    f"{float(matrix[k - 1][i])!r}, the ledger says "
                    f"{float(replayed[i])!r}"
                )
        self.checked.append(f"{COINS_FILE} ({self.rounds} rounds)")

    def _round_values(self, k: int) -> dict[str, float]:
        r = self.replay[k]
        out = {
            "coins_minted": r["minted_round"],
            "coins_burned": r["burned_round"],
            "coins_total": float(r["coins"].sum()),
            "coins_issued_total": r["minted"],
            "coins_burned_total": r["burned"],
            "num_matched": r["matched"],
            "num_trained": r["trained"],
            "num_winners": r["winners"],
        }
        if not (self.config or {}).get("churn", {}).get("enabled"):
            coins = r["coins"]
            out.update(
                coins_gini=gini(coins), coins_max=float(coins.max()), coins_mean=float(coins.mean())
            )
        return out

    def _compare_row(self, where: str, row: dict[str, Any], k: int) -> None:
        for key, expected in self._round_values(k).items():
            if key not in row or row[key] in ("", None):
                continue
            try:
                have = float(row[key])
            except (TypeError, ValueError):
                raise Tampered(
                    f"{where}, round {k}: {key} is not a number ({row[key]!r})"
                ) from None
            if not math.isclose(have, expected, rel_tol=RTOL, abs_tol=ATOL):
                raise Tampered(
                    f"{where}, round {k}: {key} is {have!r}, the ledger says {float(expected)!r}"
                )

    def _rounds_file(self) -> None:
        rows = getattr(self, "round_rows", None)
        if rows is None:
            self.notes.append(f"no {ROUNDS_FILE}")
            return
        for k, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or row.get("round") != k:
                raise Tampered(f"{ROUNDS_FILE}: line {k} is not round {k}")
            self._compare_row(ROUNDS_FILE, row, k)
        self.checked.append(ROUNDS_FILE)

    def _history_file(self) -> None:
        path = self.run_dir / "history.csv"
        if not path.is_file():
            return
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise Tampered(f"history.csv cannot be read ({err})") from None
        if len(rows) > self.rounds:
            raise Tampered(f"history.csv has {len(rows)} rounds, the ledger {self.rounds}")
        for row in rows:
            try:
                k = int(float(row.get("round") or "x"))
            except ValueError:
                raise Tampered("history.csv: a row without a round number") from None
            if not 1 <= k <= self.rounds:
                raise Tampered(f"history.csv: round {k} is not in the ledger")
            self._compare_row("history.csv", row, k)
        self.checked.append("history.csv")

    def _participants_file(self) -> None:
        path = self.run_dir / "participants.csv"
        if not path.is_file() or not self.rounds:
            return
        final = self.replay[self.rounds]
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            for row in rows:
                i = int(row["participant"])
                if not 0 <= i < self.n:
                    raise Tampered(f"participants.csv: participant {i} does not exist")
                checks = {"coins": float(final["coins"][i]), "matches": float(final["matches"][i])}
                if final["wins"] is not None:
                    checks["wins"] = float(final["wins"][i])
                for key, expected in checks.items():
                    if key in row and not math.isclose(
                        float(row[key]), expected, rel_tol=RTOL, abs_tol=ATOL
                    ):
                        raise Tampered(
                            f"participants.csv: participant {i} has {key} "
                            f"{row[key]}, the ledger says {expected!r}"
                        )
        except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError) as err:
            raise Tampered(f"participants.csv cannot be read ({err})") from None
        self.checked.append("participants.csv")

    def _metrics_file(self) -> None:
        path = self.run_dir / "metrics.json"
        if not path.is_file():
            self.notes.append("no metrics.json: the run has not finished")
            self.metrics = None
            return
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError("not an object")
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise Tampered(f"metrics.json cannot be read ({err})") from None
        self.metrics = metrics
        final = self.replay[self.rounds] if self.rounds else None
        expected = {
            "rounds": float(self.rounds),
            "hops": float(sum(self.replay[k]["trained"] for k in self.replay)),
        }
        if final is not None:
            expected.update(
                coins_total=float(final["coins"].sum()),
                coins_minted=final["minted"],
                coins_burned=final["burned"],
            )
        for key, value in expected.items():
            have = metrics.get(key)
            if have is None:
                continue
            if not isinstance(have, (int, float)) or not math.isclose(
                float(have), value, rel_tol=RTOL, abs_tol=ATOL
            ):
                raise Tampered(f"metrics.json: {key} is {have!r}, the ledger says {float(value)!r}")
        self.checked.append("metrics.json")

    def _checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        self.ckpt = None
        if not path.is_file():
            self.notes.append(f"no {CHECKPOINT_FILE}")
            return
        try:
            ckpt = read_checkpoint(path, self.n)
        except CheckpointError as err:
            raise Tampered(str(err)) from None
        state = ckpt["state"]
        if state.round > self.rounds:
            raise Tampered(f"the checkpoint is at round {state.round}, the ledger at {self.rounds}")
        replay = self.replay.get(state.round) if state.round else None
        coins = replay["coins"] if replay else np.zeros(self.n)
        if not np.allclose(coins, state.coins, rtol=RTOL, atol=ATOL):
            worst = int(np.argmax(np.abs(coins - state.coins)))
            raise Tampered(
                f"balances replayed from the ledger differ from the checkpoint's "
                f"(participant {worst}: ledger {float(coins[worst])!r}, checkpoint "
                f"{float(state.coins[worst])!r})"
            )
        minted, burned = (replay["minted"], replay["burned"]) if replay else (0.0, 0.0)
        if not (
            math.isclose(minted, state.minted, rel_tol=RTOL, abs_tol=ATOL)
            and math.isclose(burned, state.burned, rel_tol=RTOL, abs_tol=ATOL)
        ):
            raise Tampered("minted/burned totals in the ledger differ from the checkpoint's")
        if ckpt["ledger"] is not None:
            head, length = heads_by_round(self.blocks, max(state.round, 1)).get(
                state.round, (GENESIS_HASH, 0)
            )
            if [head, length] != list(ckpt["ledger"]):
                raise Tampered(
                    f"the checkpoint's ledger head (round {state.round}) is not the ledger's"
                )
        self.ckpt = ckpt
        self.checked.append(f"{CHECKPOINT_FILE} (round {state.round})")

    def _models(self) -> None:
        import torch

        from derelayl.protocol.trained import state_hash

        committed = {GENESIS_HASH}
        for b in self.blocks:
            if b["kind"] == "commitment":
                for h, parent, *_ in b["payload"]["models"]:
                    committed.update((h, parent))
        live = set()
        if self.ckpt is not None:
            live = set(self.ckpt["perf"].get("live_keys") or ())
        folder = self.run_dir / MODELS_DIR

        def load(path: Path):
            try:
                state = torch.load(path, weights_only=True, map_location="cpu")
                if not isinstance(state, dict) or not all(
                    isinstance(v, torch.Tensor) for v in state.values()
                ):
                    raise ValueError("not a state_dict of tensors")
                return state_hash(state)
            except Exception as err:  # weights_only refuses anything that is not plain data
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise Tampered(
                    f"{path.relative_to(self.run_dir)} is not a weights file ({first[:200]})"
                ) from None

        stored = sorted(folder.glob("*.pt")) if folder.is_dir() else []
        for path in stored:
            if load(path) != path.stem:
                raise Tampered(f"model {path.stem[:16]}... does not match its hash (altered)")
            if len(committed) > 1 and path.stem not in committed:
                raise Tampered(
                    f"model {path.stem[:16]}... in {MODELS_DIR}/ was never committed in the ledger"
                )
        for key in live:
            if not (folder / f"{key}.pt").is_file():
                raise Tampered(f"model {key[:16]}... is missing from {MODELS_DIR}/")
        if stored:
            self.checked.append(f"{len(stored)} stored models")
        best = self.run_dir / "model.pt"
        if best.is_file() and (stored or self.ckpt is not None):
            key = load(best)
            expected = None
            if self.ckpt is not None and self.ckpt["perf"].get("global_best"):
                expected = self.ckpt["perf"]["global_best"][0]
            if expected is not None and key != expected:
                raise Tampered(
                    "model.pt is not the run's best model (its hash differs from the checkpoint's)"
                )
            if expected is None and len(committed) > 1 and key not in committed:
                raise Tampered("model.pt was never committed in the ledger")
            self.checked.append("model.pt")

    # -- the anchor ------------------------------------------------------------------------------
    def _anchors(self) -> list[dict[str, str]]:
        if self.run_ids:
            uri = self.tracking_uri or _config_uri(self.config)
            return [{"run_id": r, "tracking_uri": uri} for r in self.run_ids if uri]
        runs = read_tracked_runs(self.run_dir)
        known = {r["run_id"] for r in runs}
        final = (
            (self.metrics or {}).get("mlflow_run_id") if getattr(self, "metrics", None) else None
        )
        if isinstance(final, str) and final not in known and _config_uri(self.config):
            runs.append({"run_id": final, "tracking_uri": _config_uri(self.config)})
        if self.tracking_uri:
            runs = [dict(r, tracking_uri=self.tracking_uri) for r in runs]
        return runs

    def _anchor(self) -> None:
        from derelayl.io.anchor import read_anchor
        from derelayl.io.mlflow_store import open_client

        anchors = self._anchors()
        if not anchors:
            self.notes.append(
                "not checked against an anchor: the run was not tracked in MLflow "
                "(tracking=none), or its folder names no MLflow run; pass "
                "--run-id to check against one"
            )
            return
        heads = heads_by_round(self.blocks, self.rounds)
        final_id = (self.metrics or {}).get("mlflow_run_id") if self.metrics else None
        covered = 0
        for entry in anchors:
            run_id, uri = entry["run_id"], entry["tracking_uri"]
            try:
                client = open_client(uri, create=False)
                codes, tag, status = read_anchor(client, run_id)
            except Exception as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                if self.run_ids:  # asked for on the command line: not checking it is an error
                    raise NotARun(
                        f"cannot check the anchor in MLflow run {run_id}: {first[:200]}"
                    ) from None
                self.notes.append(f"not checked against MLflow run {run_id}: {first[:200]}")
                continue
            for k, code in sorted(codes.items()):
                if k not in heads:
                    raise Tampered(
                        f"MLflow run {run_id} anchored round {k}, the ledger ends at "
                        f"round {self.rounds} (rounds were removed)"
                    )
                if head_code(heads[k][0]) != code:
                    raise Tampered(
                        f"the ledger's head after round {k} differs from its anchor in "
                        f"MLflow run {run_id} (the ledger was altered after it was "
                        f"recorded)"
                    )
            if tag:
                try:
                    k_text, full = tag.split(":", 1)
                    k = int(k_text)
                except ValueError:
                    k, full = -1, ""
                if k not in heads or heads[k][0] != full:
                    raise Tampered(
                        f"the ledger's head after round {k} differs from the full head "
                        f"anchored in MLflow run {run_id}"
                    )
            covered = max(covered, max(codes, default=0))
            if run_id == final_id:
                self._final_run(client, run_id, codes, status)
            self.anchored = True
            self.checked.append(f"anchor: MLflow run {run_id} ({len(codes)} rounds)")
        if self.anchored and covered < self.rounds:
            self.notes.append(
                f"rounds {covered + 1}..{self.rounds} are not anchored (the run "
                f"stopped before they were recorded in MLflow)"
            )

    def _final_run(self, client, run_id: str, codes: dict[int, int], status: str) -> None:
        """The MLflow run that finished the run: it must anchor every round and agree with
        metrics.json and config.yaml."""
        if status == "FINISHED" and max(codes, default=0) < self.rounds:
            raise Tampered(
                f"MLflow run {run_id} finished after anchoring {max(codes, default=0)}"
                f" rounds, the ledger has {self.rounds} (rounds were added)"
            )
        run = client.get_run(run_id)
        final = {
            k[len("final/") :]: v for k, v in run.data.metrics.items() if k.startswith("final/")
        }
        for key, value in (self.metrics or {}).items():
            if (
                key in final
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and not math.isclose(float(value), final[key], rel_tol=RTOL, abs_tol=ATOL)
            ):
                raise Tampered(
                    f"metrics.json: {key} is {value!r}, MLflow run {run_id} recorded {final[key]!r}"
                )
        if self.config is not None:
            from derelayl.io.run_folder import comparable

            params = run.data.params
            for key, value in comparable(self.config).items():
                recorded = params.get(key)
                if recorded is not None and len(recorded) < 6000 and recorded != str(value):
                    raise Tampered(
                        f"config.yaml: {key} is {value!r}, MLflow run {run_id} "
                        f"recorded {recorded!r}"
                    )


# -- reading -------------------------------------------------------------------------------------
def read_blocks(path: Path) -> list[dict[str, Any]]:
    """The ledger's blocks; a torn last line (a run killed mid-write) is left out."""
    blocks = []
    try:
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if not line.endswith("\n"):
                    break
                try:
                    block = json.loads(line)
                except ValueError as err:
                    raise Tampered(f"block {i}: not valid JSON ({err})") from None
                if not isinstance(block, dict):
                    raise Tampered(f"block {i}: not a JSON object")
                blocks.append(block)
    except UnicodeDecodeError:
        raise Tampered(f"{path.name} is not UTF-8 text") from None
    for i, b in enumerate(blocks):
        for key, kind, what in (
            ("index", int, "an integer"),
            ("round", int, "an integer"),
            ("writer", int, "an integer"),
            ("kind", str, "a string"),
            ("prev_hash", str, "a string"),
            ("hash", str, "a string"),
            ("payload", dict, "an object"),
        ):
            if key in b and (not isinstance(b[key], kind) or isinstance(b[key], bool)):
                raise Tampered(f"block {i}: {key} is not {what}")
        if "round" in b and b["round"] < 0:
            raise Tampered(f"block {i}: negative round")
    return blocks


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _pid(x: Any, n: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < n


def check_payloads(blocks: list[dict[str, Any]], n: int) -> None:
    """Every payload has the fields and types its kind needs (so replaying cannot fail)."""
    previous_round = 0
    for i, b in enumerate(blocks):
        p, kind = b["payload"], b["kind"]
        if kind not in BLOCK_KINDS:
            raise Tampered(f"block {i}: unknown kind {kind!r}")
        if b["round"] < previous_round:
            raise Tampered(f"block {i}: round {b['round']} after round {previous_round}")
        previous_round = b["round"]
        if not _pid(b["writer"], n):
            raise Tampered(f"block {i}: writer {b['writer']} is not a participant (0..{n - 1})")
        if not _num(p.get("fee")) or p["fee"] < 0:
            raise Tampered(f"block {i}: fee is not a non-negative number")
        ok = True
        if kind == "deposit":
            ok = isinstance(p.get("deposits"), list) and all(
                isinstance(d, list)
                and len(d) == 4
                and _pid(d[0], n)
                and _num(d[1])
                and _pid(d[2], n)
                and _num(d[3])
                for d in p["deposits"]
            )
        elif kind == "commitment":
            ok = isinstance(p.get("models"), list) and all(
                isinstance(m, list)
                and len(m) == 5
                and isinstance(m[0], str)
                and isinstance(m[1], str)
                and _pid(m[2], n)
                and _pid(m[3], n)
                and isinstance(m[4], int)
                for m in p["models"]
            )
        elif kind == "testing":
            ok = isinstance(p.get("cases_digest"), str) and isinstance(p.get("num_cases"), int)
        elif kind == "settlement":
            credits = p.get("credits")
            ok = (
                isinstance(p.get("ranking"), list)
                and isinstance(p.get("winners"), list)
                and all(isinstance(w, str) for w in p["winners"])
                and isinstance(credits, dict)
                and all(k.isdigit() and int(k) < n and _num(v) for k, v in credits.items())
                and _num(p.get("royalties_minted"))
                and _num(p.get("forfeited"))
            )
        if not ok:
            raise Tampered(f"block {i}: the {kind} payload is malformed")


def replay_by_round(blocks: list[dict[str, Any]], n: int, rounds: int) -> dict[int, dict]:
    """Settled round k -> the books after it: coins, cumulative minted and burned, this round's
    minted and burned, deposits matched, models trained and won, per-participant matches/wins."""
    by_round: dict[int, list] = {}
    for b in blocks:
        by_round.setdefault(b["round"], []).append(b)
    coins = np.zeros(n)
    minted = burned = 0.0
    matches = np.zeros(n)
    wins = np.zeros(n)
    wins_known = True
    out = {}
    for k in range(1, rounds + 1):
        round_blocks = by_round.get(k - 1, [])
        delta, m, b_ = balances_from_ledger(round_blocks, n)
        coins = coins + delta
        minted += m
        burned += b_
        matched = trained = won = 0
        trainer_of: dict[str, set[int]] = {}
        for block in round_blocks:
            pay = block["payload"]
            if block["kind"] == "deposit":
                matched += len(pay["deposits"])
                for d in pay["deposits"]:
                    matches[d[0]] += 1
            elif block["kind"] == "commitment":
                trained += len(pay["models"])
                for h, _, t, *_ in pay["models"]:
                    trainer_of.setdefault(h, set()).add(t)
            elif block["kind"] == "settlement":
                won += len(pay["winners"])
                for h in pay["winners"]:
                    who = trainer_of.get(h, set())
                    if len(who) == 1:
                        wins[next(iter(who))] += 1
                    else:
                        wins_known = False
        out[k] = {
            "coins": coins.copy(),
            "minted": minted,
            "burned": burned,
            "minted_round": m,
            "burned_round": b_,
            "matched": matched,
            "trained": trained,
            "winners": won,
            "matches": matches.copy(),
            "wins": wins.copy() if wins_known else None,
        }
    return out


def _read_jsonl(path: Path) -> list[Any] | None:
    if not path.is_file():
        return None
    rows = []
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                rows.append(json.loads(line))
    except (ValueError, UnicodeDecodeError) as err:
        raise Tampered(f"{path.name} cannot be read ({err})") from None
    return rows


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise Tampered(f"config.yaml cannot be read ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise Tampered("config.yaml is not a mapping")
    return data


def _config_uri(config: dict[str, Any] | None) -> str | None:
    tracking = (config or {}).get("tracking") or {}
    uri = tracking.get("uri")
    return uri if isinstance(uri, str) and tracking.get("enabled", True) else None
