"""Simulated devices and communication: the shared axes (bytes moved, simulated seconds).

Every method is compared on the same two cost axes, never on this machine's own clock:

- *bytes*: what crosses the network (a relay hop moves one model; an FL round moves the model
  down and up for each selected client, SCAFFOLD also its control variates);
- *simulated time*: each participant has a compute speed (sample passes per second) and a
  bandwidth (bytes per second) drawn once from the seed; training ``s`` samples takes
  ``s / speed`` seconds, moving ``b`` bytes takes ``b / bandwidth`` seconds.

The default profile (``conf/participants/mobile.yaml``) is heterogeneous like a fleet of phones:
log-normal speed and bandwidth, a heavy right tail and about an order of magnitude between slow
and fast devices (see the README, "Simulated time", for the sources).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from derelayl.sim.errors import ConfigError


@dataclass(frozen=True)
class Devices:
    """Per-participant compute speed (samples/s) and bandwidth (bytes/s)."""

    speed: tuple[float, ...]
    bandwidth: tuple[float, ...]
    server_speed: float = math.inf  # the centralized baseline's trainer (samples/s)

    def __len__(self) -> int:
        return len(self.speed)

    def train_seconds(self, pid: int, samples: int) -> float:
        return samples / self.speed[pid]

    def transfer_seconds(self, pid: int, nbytes: int) -> float:
        return nbytes / self.bandwidth[pid]


class DeviceProfile:
    """Draws :class:`Devices` from log-normal distributions (``sigma`` 0: every device alike).

    ``speed_median`` / ``bandwidth_median`` are the medians; ``*_sigma`` the std of the log;
    draws are clipped to ``[*_min, *_max]``.
    """

    def __init__(
        self,
        speed_median: float = 100.0,
        speed_sigma: float = 0.8,
        speed_min: float = 10.0,
        speed_max: float = 2000.0,
        bandwidth_median: float = 1.25e6,
        bandwidth_sigma: float = 1.0,
        bandwidth_min: float = 5e4,
        bandwidth_max: float = 2.5e7,
        server_speed: float = 20000.0,
    ):
        checks = {
            "speed_median": speed_median,
            "speed_min": speed_min,
            "speed_max": speed_max,
            "bandwidth_median": bandwidth_median,
            "bandwidth_min": bandwidth_min,
            "bandwidth_max": bandwidth_max,
            "server_speed": server_speed,
        }
        for key, value in checks.items():
            if not value > 0:
                raise ConfigError(f"participants.devices.{key} must be > 0 (got {value})")
        for key, value in (("speed_sigma", speed_sigma), ("bandwidth_sigma", bandwidth_sigma)):
            if value < 0:
                raise ConfigError(f"participants.devices.{key} must be >= 0 (got {value})")
        if speed_min > speed_max or bandwidth_min > bandwidth_max:
            raise ConfigError("participants.devices: *_min must be <= *_max")
        self.speed = (float(speed_median), float(speed_sigma), float(speed_min), float(speed_max))
        self.bandwidth = (
            float(bandwidth_median),
            float(bandwidth_sigma),
            float(bandwidth_min),
            float(bandwidth_max),
        )
        self.server_speed = float(server_speed)

    @staticmethod
    def _draw(params, n: int, rng: np.random.Generator) -> tuple[float, ...]:
        median, sigma, lo, hi = params
        values = median * np.exp(sigma * rng.standard_normal(n))
        return tuple(float(v) for v in np.clip(values, lo, hi))

    def draw(self, num_participants: int, rng: np.random.Generator) -> Devices:
        speed = self._draw(self.speed, num_participants, rng)
        bandwidth = self._draw(self.bandwidth, num_participants, rng)
        return Devices(speed, bandwidth, self.server_speed)


def tensor_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of the model's state (parameters and buffers) as sent over the network."""
    return tensor_bytes(module.state_dict().values())


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the trainable parameters (the size of one SCAFFOLD control variate)."""
    return tensor_bytes(p for p in module.parameters() if p.requires_grad)


class Meter:
    """The run's two cost axes as it goes: bytes moved and simulated seconds.

    Every runner books its costs here the same way: ``seconds(pid, samples, nbytes)`` is what a
    participant's step takes on its own device (training ``samples`` sample passes and moving
    ``nbytes``); work that runs one after another adds up (:meth:`wait`), work that runs in
    parallel waits for its slowest part (:meth:`wait_for_slowest`). Without devices there is no
    simulated time (``sim_time_s`` is None) and only bytes are counted.
    """

    def __init__(self, devices: Devices | None, nbytes: int = 0, sim_time_s: float | None = 0.0):
        self.devices = devices
        self.bytes = int(nbytes)
        self.sim_time_s = None if devices is None else float(sim_time_s or 0.0)

    def seconds(self, pid: int, samples: int = 0, nbytes: int = 0) -> float:
        if self.devices is None:
            return 0.0
        return self.devices.transfer_seconds(pid, nbytes) + self.devices.train_seconds(pid, samples)

    def move(self, nbytes: int) -> None:
        self.bytes += int(nbytes)

    def wait(self, seconds: float) -> None:
        if self.sim_time_s is not None:
            self.sim_time_s += seconds

    def wait_for_slowest(self, seconds) -> None:
        if self.sim_time_s is not None:
            self.sim_time_s += max(seconds, default=0.0)
