"""Faults during a run and files that must not be trusted (issue "reliability" §2, §3, §5):

- SIGKILL in the middle of a checkpoint write, SIGINT during training and during the search:
  `--resume` finishes with the same weights / search.json as an uninterrupted run, and no
  checkpoint is ever half-written;
- a full disk while saving: a clear error, the previous checkpoint intact;
- a damaged, truncated or foreign checkpoint, a slim.pt edited by hand, a pickle payload in a
  checkpoint or a slim.pt, an architecture naming `os.system`: one sentence, exit 2, and the
  payload never runs;
- determinism: the same command twice gives the same widths, search history and weights.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap

import widthc
from widthc import machine
from widthc.cli import main
from widthc.errors import WidthcError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "examples" / "mobilenet_digits.py")
SMALL = str(ROOT / "examples" / "model.py")
TINY = ["--epochs", "1", "--batch-size", "64", "--population", "4", "--generations", "1",
        "--calib-batches", "2", "--retrain-epochs", "0", *CHEAP_TUNING]  # fmt: skip


def _widthc(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _strip_times(data):
    if isinstance(data, dict):
        return {k: _strip_times(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_strip_times(v) for v in data]
    return data


def _one_sentence_exit_2(res, *needles):
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("widthc: error: ") and len(res.stderr.strip().splitlines()) == 1
    for needle in needles:
        assert needle in res.stderr, res.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


# --- untrusted files ----------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_truncated_checkpoint_is_one_sentence(run, tmp_path):
    out = _copy(run, tmp_path)
    data = (out / "supernet.pt").read_bytes()
    (out / "supernet.pt").write_bytes(data[: len(data) // 3])
    _one_sentence_exit_2(_widthc("search", out, "--flops", "40%"), "damaged or truncated")


def test_checkpoint_of_another_model_names_the_groups(run, tmp_path):
    other = tmp_path / "other"
    res = _widthc("train", SMALL, "--data", "digits", "--input-shape", "1,3,8,8", "--out", other,
                  "--epochs", "1", "--batch-size", "256")  # fmt: skip
    assert res.exit_code == 0, res.output
    out = _copy(run, tmp_path)
    shutil.copy2(other / "supernet.pt", out / "supernet.pt")
    _one_sentence_exit_2(
        _widthc("search", out, "--flops", "40%"), "trained for another model", "group 0"
    )


def test_pickle_payloads_are_refused_and_never_run(run, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    ckpt = torch.load(run / "supernet.pt", weights_only=True)
    ckpt["evil"] = _Payload(marker)
    out = _copy(run, tmp_path)
    torch.save(ckpt, out / "supernet.pt")
    _one_sentence_exit_2(_widthc("search", out, "--flops", "40%"), "refuses to load")
    slim = torch.load(run / "flops-50pct" / "slim.pt", weights_only=True)
    slim["extra"]["evil"] = _Payload(marker)
    torch.save(slim, tmp_path / "evil.pt")
    with pytest.raises(WidthcError, match="refuses to load"):
        widthc.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_slim_pt_edited_by_hand_is_one_sentence(run, tmp_path):
    out = _copy(run, tmp_path)
    path = out / "flops-50pct" / "slim.pt"
    data = torch.load(path, weights_only=True)
    graph = json.loads(data["graph"])
    conv = next(m for m in graph["modules"].values() if m["class"].endswith(":Conv2d"))
    conv["kwargs"]["out_channels"] += 1
    data["graph"] = json.dumps(graph)
    torch.save(data, path)
    _one_sentence_exit_2(_widthc("retrain", out, "--retrain-epochs", 0), "edited by hand")


def test_architecture_naming_os_system_is_refused(run, tmp_path):
    data = torch.load(run / "flops-50pct" / "slim.pt", weights_only=True)
    graph = json.loads(data["graph"])
    node = next(n for n in graph["nodes"] if n["op"] == "call_module")
    node["op"], node["target"] = "call_function", "os:system"
    data["graph"] = json.dumps(graph)
    torch.save(data, tmp_path / "system.pt")
    with pytest.raises(WidthcError, match="`os:system`, which widthc does not allow"):
        widthc.load(tmp_path / "system.pt")


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from widthc.frontends.data import load_splits
    from widthc.frontends.models import load_model
    from widthc.train import TrainConfig, train_supernet

    src = load_model(DIGITS)
    net = widthc.supernet(widthc.compile(src.model, src.example_inputs))
    splits = load_splits("digits", (1, 1, 8, 8))
    real_save, calls = torch.save, [0]

    def full_disk(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    cfg = TrainConfig(epochs=1, batch_size=64, checkpoint_every=3)
    with pytest.raises(WidthcError, match="No space left on device"):
        train_supernet(net, splits.train, None, cfg, tmp_path)
    assert torch.load(tmp_path / "supernet.pt", weights_only=True)["step"] == 3  # the last good
    assert not (tmp_path / "supernet.pt.tmp").exists()


# --- killed, interrupted ----------------------------------------------------------------------

_KILL_IN_WRITE = """
import os, signal, sys, torch
real = torch.save
calls = [0]
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        with open(f, "wb") as out:
            out.write(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from widthc.cli import main
main(sys.argv[1:])
"""


def _python(code: str, args: list, cwd: Path, env: dict | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


TRAIN = ["train", DIGITS, "--data", "digits", "--epochs", "2", "--batch-size", "64",
         "--checkpoint-every", "4"]  # fmt: skip


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_killed_during_a_checkpoint_write_resumes_bit_for_bit(tmp_path):
    straight = tmp_path / "straight"
    assert _widthc(*TRAIN, "--out", straight).exit_code == 0
    out = tmp_path / "killed"
    res = _python(_KILL_IN_WRITE, [*TRAIN, "--out", out], tmp_path, {"KILL_AT": "3"})
    assert res.returncode == -signal.SIGKILL
    assert (out / "supernet.pt.tmp").read_bytes() == b"half"  # the torn write is the temp file
    assert torch.load(out / "supernet.pt", weights_only=True)["step"] == 8  # the one before: whole
    res = _widthc(*TRAIN, "--out", out, "--resume")
    assert res.exit_code == 0, res.output
    assert _same(_weights(straight / "supernet.pt"), _weights(out / "supernet.pt"))
    assert not (out / "supernet.pt.tmp").exists()


def _interrupt_when(args: list, cwd: Path, ready, timeout: float = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "widthc", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"finished too early: {proc.stderr.read()[-1500:]}"
        assert time.time() - t0 < timeout, "never got there"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _logged_steps(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)


@pytest.mark.slow
def test_ctrl_c_saves_training_and_search_and_resume_finishes_the_same(tmp_path):
    args = ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--epochs", "2",
            "--batch-size", "32", "--checkpoint-every", "1000", "--population", "6",
            "--generations", "3", "--calib-batches", "2", "--retrain-epochs", "0",
            *CHEAP_TUNING]  # fmt: skip
    straight = tmp_path / "straight"
    assert _widthc(*args, "--out", straight).exit_code == 0
    out = tmp_path / "stopped"
    code, err = _interrupt_when([*args, "--out", out], tmp_path,
                                lambda: _logged_steps(out / "train.jsonl") >= 10)  # fmt: skip
    assert code == 130 and "interrupted" in err and "--resume" in err, err
    saved = torch.load(out / "supernet.pt", weights_only=True)["step"]
    assert saved == _logged_steps(out / "train.jsonl") >= 10  # saved at the step it stopped at

    def searching() -> bool:
        try:
            data = json.loads((out / "search.json").read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return any(len(r.get("history", [])) >= 3 for r in data["results"])

    code, err = _interrupt_when([*args, "--out", out, "--resume"], tmp_path, searching)
    assert code == 130 and "--resume" in err, err
    assert not json.loads((out / "search.json").read_text())["complete"]
    assert _widthc(*args, "--out", out, "--resume").exit_code == 0
    a = _strip_times(json.loads((straight / "search.json").read_text()))
    b = _strip_times(json.loads((out / "search.json").read_text()))
    assert a == b
    assert _same(_weights(straight / "supernet.pt"), _weights(out / "supernet.pt"))


# --- determinism -----------------------------------------------------------------------------


def test_same_command_same_seed_same_results(run, tmp_path):
    again = tmp_path / "again"
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", again, *TINY)
    assert res.exit_code == 0, res.output
    for name in ("search.json", "flops-50pct/widths.json", "flops-50pct/uniform/widths.json"):
        a = _strip_times(json.loads((run / name).read_text()))
        b = _strip_times(json.loads((again / name).read_text()))
        assert a == b, name
    assert _same(_weights(run / "supernet.pt"), _weights(again / "supernet.pt"))
    sa = torch.load(run / "flops-50pct" / "slim.pt", weights_only=True)["state_dict"]
    sb = torch.load(again / "flops-50pct" / "slim.pt", weights_only=True)["state_dict"]
    assert _same(sa, sb)
    config = json.loads((again / "config.json").read_text())
    assert config["seed"] == 0
    assert set(config["versions"]) == {"widthc", "torch", "python", "cpu", "threads"}
    assert config["versions"]["cpu"] == machine.cpu()  # the report says where it reproduces
    assert config["versions"]["threads"] == torch.get_num_threads()


def test_a_run_resumed_on_another_cpu_or_thread_count_says_so(tmp_path, monkeypatch):
    """config.json keeps the versions, CPU and threads a run started with; resumed with others
    it records them (`resumed_with`), and the report says it no longer reproduces bit for bit."""
    from widthc import run

    config, path = {"model": "m.py", "seed": 0}, tmp_path / "run"
    first = run.versions()
    run.Run.create(path, config)
    assert "resumed_with" not in run.Run.create(path, config, resume=True).config
    monkeypatch.setattr(run, "versions", lambda: {**first, "threads": first["threads"] + 1})
    again = run.Run.create(path, config, resume=True)
    assert again.config["versions"] == first
    saved = json.loads((path / "config.json").read_text())
    assert (
        saved["resumed_with"] == {"threads": first["threads"] + 1} == again.config["resumed_with"]
    )
    older = tmp_path / "older"  # a run of a widthc that recorded no CPU and threads
    run.Run.create(older, config)
    saved = json.loads((older / "config.json").read_text())
    saved["versions"] = {k: first[k] for k in ("widthc", "torch", "python")}
    (older / "config.json").write_text(json.dumps(saved))
    assert "resumed_with" not in run.Run.create(older, config, resume=True).config
