"""Distributed min-min (widthc/distributed.py): 2 CPU processes with gloo under DDP train the
same candidates, end with identical weights, and (no batch norm) match one process that sees the
concatenated batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc import distributed
from widthc.train import TrainConfig, train_supernet

B = 8  # per process
CFG = dict(epochs=2, lr=0.05, seed=7, checkpoint_every=3, minmin_start=0.25, sandwich=True)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4),
    )  # fmt: skip


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(64, 1, 8, 8, generator=g), torch.randint(4, (64,), generator=g)
    )


def _train(batch_size: int, run_dir: Path | None):
    net = widthc.supernet(widthc.compile(_model(), torch.randn(2, 1, 8, 8)), offset=1)
    result = train_supernet(net, _data(), config=TrainConfig(batch_size=batch_size, **CFG),
                            run_dir=run_dir)  # fmt: skip
    return net, result


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        net, result = _train(B, Path(out) / "run")
        torch.save(net.state_dict(), Path(out) / f"rank{rank}.pt")
        (Path(out) / f"rank{rank}.json").write_text(
            json.dumps({"losses": result.losses, "candidates": result.candidates})
        )
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert logs[0] == logs[1]  # same averaged losses, same candidates, every step
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k

    single, result = _train(2 * B, None)  # one process, the two ranks' batches concatenated
    assert result.candidates == logs[0]["candidates"]
    assert result.losses == pytest.approx(logs[0]["losses"], abs=1e-5)
    for k, v in single.state_dict().items():
        assert torch.allclose(ranks[0][k], v, atol=1e-5), k

    ckpt = torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 8 and len(ckpt["rng"]) == 2
    assert len((tmp_path / "run" / "train.jsonl").read_text().splitlines()) == 8  # rank 0 only


MODEL_PY = """
import torch
from torch import nn

input_shape = (1, 1, 8, 8)


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
"""


def test_torchrun_cli(tmp_path):
    """`torchrun --nproc_per_node 2 -m widthc train ...` on CPU: DDP with gloo, rank 0 writes."""
    (tmp_path / "model.py").write_text(MODEL_PY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), "-m", "widthc", "train", "model.py",
        "--data", "digits", "--out", "run", "--batch-size", "128", "--distributed",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("trained 4 steps") == 1  # 1257 samples // (128 x 2), rank 0 reports
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["distributed"] is True
    ckpt = torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4


def test_sync_bn_is_converted_before_compiling():
    """--sync-bn converts batch norms before `compile`: the same groups and bins, and the
    supernet slices SyncBatchNorm like BatchNorm (equal to slim)."""
    import zoo

    from widthc.passes.slim import slim

    model, inputs = zoo.small_model("residual")
    plain = widthc.compile(model, inputs)
    synced_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced_model.modules())
    synced = widthc.compile(synced_model, inputs)
    assert [(g.n, g.bins, g.frozen) for g in synced.groups] == [
        (g.n, g.bins, g.frozen) for g in plain.groups
    ]
    choice = synced.candidates(synced.random(0))[1]
    net = widthc.supernet(synced).eval()
    net.set_choice(choice)
    with torch.no_grad():
        assert torch.allclose(net(*inputs), slim(synced, choice)(*inputs), atol=1e-6)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from widthc.cli import main

    (tmp_path / "model.py").write_text(MODEL_PY)
    res = CliRunner().invoke(
        main,
        [
            "train",
            str(tmp_path / "model.py"),
            "--data",
            "digits",
            "--out",
            str(tmp_path / "r"),
            "--sync-bn",
        ],
    )
    assert res.exit_code == 2 and "--sync-bn needs --device cuda" in res.output


def test_shutdown_frees_ddp_before_every_rank_leaves(monkeypatch):
    """DDP's reducer freed only at interpreter exit, after the group was destroyed, made gloo
    abort a rank ('terminate called without an active exception', CI): shutdown collects the
    garbage first, then waits for every rank, then destroys the group."""
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.shutdown()
    assert calls == ["collect", "barrier", "destroy"]


def test_only_rank_0_writes_the_run_directory(tmp_path, monkeypatch):
    """Every rank runs the stages; two ranks renaming one temp file raced (test_torchrun_cli
    failed once with 'cannot write run/analysis.json')."""
    from widthc import distributed
    from widthc.run import Run

    run = Run(tmp_path)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert run.write_json("analysis.json", {"a": 1}) == tmp_path / "analysis.json"
    with run.stage("analyze"):
        pass
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    run.write_json("analysis.json", {"a": 1})
    assert json.loads((tmp_path / "analysis.json").read_text()) == {"a": 1}
