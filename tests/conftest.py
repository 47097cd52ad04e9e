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
