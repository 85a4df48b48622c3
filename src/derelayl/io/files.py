"""Files written into the run directory as the run goes (history survives a crash)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import IO, Any

from derelayl.sim.events import HopRecord, Observer, RoundRecord

HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


class HistoryCsv(Observer):
    """Appends one row per hop (or per round) to ``history.csv`` and flushes it."""

    def __init__(self, path: Path, level: str = "hop"):
        self.path = Path(path)
        self.level = level
        self._fh: IO[str] | None = None
        self._writer: Any = None  # a csv.writer once the first row is known
        self._fields: list[str] = []

    def on_hop(self, record: HopRecord):
        if self.level == "hop":
            self._write(dataclasses.asdict(record))

    def on_round(self, record: RoundRecord):
        if self.level == "round":
            self._write(
                {
                    "round": record.round,
                    "hops": record.hops,
                    "samples_seen": record.samples_seen,
                    **record.metrics,
                }
            )

    def _write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._fh = self.path.open("w", newline="")
            self._fields = list(row)  # the first row's keys: the columns (later extras ignored)
            self._writer = csv.writer(self._fh)
            self._writer.writerow(self._fields)
        self._writer.writerow(["" if (v := row.get(k)) is None else v for k in self._fields])
        assert self._fh is not None  # opened with the writer
        self._fh.flush()

    def on_run_end(self, result):
        self.close()

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a killed process never leaves half a file)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps({k: clean(v) for k, v in payload.items()}, indent=2, sort_keys=True)
    tmp.write_text(text + "\n")
    tmp.replace(path)
