"""Every random stream is derived from the run's seed and a stream name.

Deriving streams by name (``"partition"``, ``("hop", round, participant)``) instead of drawing
from one global generator means adding a consumer of randomness never shifts the numbers of
another, and any single step can be replayed on its own (e.g. when a run resumes).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads where a torch stream is drawn: configs check without it
    import torch


def derive_seed(seed: int, *stream: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and the stream name parts."""
    key = repr((int(seed),) + tuple(stream)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *stream: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *stream))


def torch_generator(seed: int, *stream: object) -> torch.Generator:
    import torch

    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *stream))
    return gen
