"""MLflow tracking through ``MlflowClient`` (no global active-run state).

Metrics are buffered and written with ``log_batch`` so a run of thousands of steps costs a few
database transactions, not one per value. The buffer is flushed at the end of every settled
round (relay: every round of hops), at most once every ``flush_every_s`` seconds (one database
write costs ~10 ms: a 5,000-round random-walk run would otherwise spend a minute writing), so a
killed run's MLflow record holds its metrics up to a round or a second before the kill. Writes
hold SIGTERM/SIGINT until they are done (``io.signals.critical``).

A long run's curves are thinned to at most ``max_points`` points per metric (``tracking.
max_points``, default 1000: every ``ceil(steps / max_points)``-th hop or round, and always the
first and the last): MLflow writes ~10,000 values a second, so 5,000 rounds of 50 metrics would
take half a minute, and a chart shows no more than that anyway. Every value of every step stays in
the run folder (``history.csv``, ``rounds.jsonl``, artifacts of the run).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

from derelayl.sim.events import HopRecord, Observer, RoundRecord
from derelayl.io.signals import critical

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
HOP_KEYS = ("val_acc", "val_loss", "test_acc", "test_loss", "train_loss", "participant",
            "samples_seen", "round", "bytes", "sim_time_s")
# Also logged with step = samples seen, so runs of any algorithm overlay at equal work.
BY_SAMPLES_KEYS = ("val_acc", "test_acc")


# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags=EXPERIMENT_TAGS)
    except MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(name).experiment_id


class MlflowTracker(Observer):
    def __init__(self, tracking_uri: str, experiment: str, *, artifact_location: str | None = None,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None, flush_every_s: float = 1.0,
                 max_points: int = 1000):
        from derelayl.io.mlflow_store import open_client

        self.tracking_uri = tracking_uri
        self.client = open_client(tracking_uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, artifact_location)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = self.run.info.run_id
        self._pending: list = []
        self._tags: dict[str, str] = {}
        self.flush_every_s = float(flush_every_s)
        self._last_flush = time.monotonic()
        self.max_points = int(max_points)
        # the curves' strides (hops, rounds) and last steps, set when the run starts
        self.strides: dict[str, tuple[int, int | None]] = {"hop": (1, None), "round": (1, None)}

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step))
                             for k, v in metrics.items() if v is not None)
        if len(self._pending) >= MAX_BATCH:
            self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags written with the next flush (the last value of a key wins)."""
        self._tags.update({k: str(v) for k, v in tags.items()})

    def flush(self) -> None:
        from mlflow.entities import RunTag

        with critical():
            while self._pending or self._tags:
                chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                tags, self._tags = [RunTag(k, v) for k, v in self._tags.items()], {}
                self.client.log_batch(self.run_id, metrics=chunk, tags=tags)
        self._last_flush = time.monotonic()

    def flush_due(self) -> None:
        """Flush at a round's end unless the last flush was under ``flush_every_s`` ago."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            path = Path(path)
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            elif path.exists():
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        with critical():
            self.client.set_terminated(self.run_id, status=status)

    # -- observer ------------------------------------------------------------------------------
    def on_run_start(self, info):
        for unit, steps in (("hop", info.get("total_hops")),
                            ("round", info.get("rounds") or info.get("expected_rounds"))):
            if steps and self.max_points > 0:
                self.strides[unit] = (max(1, math.ceil(int(steps) / self.max_points)), int(steps))

    def logged(self, unit: str, step: int) -> bool:
        """Whether a hop's or round's values go to MLflow: every one, or of a long run every
        ``stride``-th, the first and the last."""
        every, last = self.strides[unit]
        return every == 1 or step == 1 or step % every == 0 or step == last

    def on_hop(self, record: HopRecord):
        if not self.logged("hop", record.hop):
            return
        values = {k: getattr(record, k) for k in HOP_KEYS}
        self.log_metrics(values, step=record.hop)
        self.log_metrics({f"by_samples/{k}": values[k] for k in BY_SAMPLES_KEYS},
                         step=record.samples_seen)

    def on_round(self, record: RoundRecord):
        if record.metrics and self.logged("round", record.round):
            self.log_metrics(record.metrics, step=record.round)
            self.log_metrics({f"by_samples/{k}": record.metrics.get(k) for k in BY_SAMPLES_KEYS},
                             step=record.samples_seen)
        self.flush_due()
