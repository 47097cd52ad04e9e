"""Test set-up: one torch thread (two threads oversubscribe a 2-core CI machine), no telemetry."""

import os
import sys
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:  # the shared test zoo lives beside the tests
    sys.path.insert(0, str(TESTS))


import pytest  # noqa: E402

from widthc.latency import runtimes, timing  # noqa: E402
from widthc.passes.flops import count_macs  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _latency_cache(tmp_path_factory):
    """Latency measurements go to a temporary cache, never the user's (~/.cache/widthc)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WIDTHC_CACHE", str(tmp_path_factory.mktemp("widthc-cache")))
    yield
    mp.undo()


class FakeRun:
    """A stand-in for one inference on a runtime, whose latency is known: 0.02 ms + 1e-6 ms per
    MAC of its model (so no test depends on a clock)."""

    def __init__(self, module, inputs):
        self.ms = 0.02 + 1e-6 * count_macs(module, inputs)

    def __call__(self):
        pass


@pytest.fixture
def fake_clock(monkeypatch):
    """Every runtime 'runs' a FakeRun and timing reads its known latency; the list it returns
    grows by one entry per timing call (the number of models timed together)."""
    calls = []
    monkeypatch.setattr(
        runtimes.Runtime, "prepare", lambda self, m, inputs, folder: lambda: FakeRun(m, inputs)
    )

    def medians(runners, rounds, clock="wall"):
        calls.append(len(runners))
        return [r.ms for r in runners]

    monkeypatch.setattr(timing, "medians", medians)
    return calls
