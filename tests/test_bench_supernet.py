"""bench/supernet_cost.py's GPU protocol and shape count (issue 15), run on a CPU with tiny
sizes: the one prepared GPU run must not fail on a typo, and its figures must add up."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import supernet_compile  # noqa: E402
import supernet_cost  # noqa: E402

import widthc.capture  # noqa: E402

CONFIGS = ["plain", "r=0 f=1.0", "r=1 f=0.25", "r=1 f=1.0", "r=0 f=1.0 sliced",
           "plain bf16+cl", "r=0 f=1.0 bf16+cl", "r=1 f=0.25 bf16+cl",
           "r=1 f=0.25 each", "r=1 f=1.0 each"]  # fmt: skip


def _main(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["supernet_cost.py", *argv])
    supernet_cost.main()


def test_gpu_protocol_measures_every_target_on_a_cpu(tmp_path, monkeypatch, capsys):
    out = tmp_path / "protocol.json"
    _main(monkeypatch, "--protocol", "--execution", "masked", "--models", "resnet18",
          "--batch", "2", "--warmup", "2", "--steps", "1", "--scoring-widths", "1",
          "--json", str(out))  # fmt: skip
    (r,) = json.loads(out.read_text())
    assert (r["model"], r["batch"], r["warmup"], r["steps"]) == ("resnet18", 2, 2, 1)
    for key in CONFIGS:
        assert r[key] > 0 and math.isfinite(r[key]), key
        unit = r["plain bf16+cl"] if "bf16" in key else r["plain"]
        assert r[f"{key} / plain"] == pytest.approx(r[key] / unit), key
    for key in CONFIGS[1:4] + CONFIGS[6:]:
        assert r[f"{key} execution"] == "masked", key  # as asked, not the CPU's default
    assert r["r=0 f=1.0 sliced execution"] == "sliced"
    assert r["r=1 f=0.25 / r=0"] == pytest.approx(r["r=1 f=0.25"] / r["r=0 f=1.0"])
    for f in ("0.25", "1.0"):  # the stacked probes against one forward each (the GPU's question)
        ratio = r[f"r=1 f={f}"] / r[f"r=1 f={f} each"]
        assert r[f"r=1 f={f} batched / each"] == pytest.approx(ratio)
    for label in ("fp32", "bf16+cl"):
        score, plain = r[f"scoring {label} ms"], r[f"slim eval {label} ms"]
        assert score > 0 and plain > 0
        assert r[f"scoring {label} / slim eval"] == pytest.approx(score / plain)
    text = capsys.readouterr().out
    assert "torch " in text and ", CPU, batch 2," in text
    for target in ("min-min r=0 step <= 1.5x", "r=1 f=0.25 <= 1.3x r=0", "scoring <= 2x"):
        assert f"| {target}" in text, target
    assert text.count("| met |") + text.count("| missed |") == 3


def test_shape_count_masked_is_one_shape_per_convolution(tmp_path, monkeypatch, capsys):
    out = tmp_path / "shapes.json"
    _main(monkeypatch, "--shapes", "3", "--models", "resnet18", "--json", str(out))
    found = json.loads(out.read_text())["resnet18"]
    convs = found["convolutions"]
    sliced, masked = found["sliced"], found["masked"]
    assert sliced["trained"] == masked["trained"] == 3
    assert masked["backward"] <= convs  # one training batch size, full width
    assert masked["forward"] <= 2 * convs  # and the probes' sub-batch
    assert sliced["forward"] > masked["forward"] and sliced["backward"] > masked["backward"]
    assert f"| resnet18 | {convs} |" in capsys.readouterr().out


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile without code generation (AOTAutograd only): the same tracing and graph
    counts as inductor, in a fraction of the time."""
    options = widthc.capture.compile_options
    monkeypatch.setattr(
        widthc.capture, "compile_options", lambda d: {**options(d), "backend": "aot_eager"}
    )


@pytest.mark.parametrize(
    "protocol",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # the GPU script's path in make test
    ids=["cuda-protocol", "cpu-side-by-side"],
)
def test_compile_bench_counts_graphs_and_checks_the_compiled_step(
    protocol, tmp_path, monkeypatch, capsys, aot_eager
):
    """bench/supernet_compile.py, tiny: every configuration timed, the graphs each compiled
    (the trained forward once for r=0 and r=1: one supernet; the probes once; nothing for a
    new width), and the first compiled step equal to the eager one."""
    out = tmp_path / "compile.json"
    argv = ["--device", "cpu", "--models", "resnet18", "--batch", "2", "--warmup", "2",
            "--steps", "2", "--json", str(out), *(["--protocol"] if protocol else [])]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["supernet_compile.py", *argv])
    supernet_compile.main()
    (r,) = json.loads(out.read_text())
    configs = list(supernet_compile.CONFIGS)
    timed = configs if protocol else configs[:4]
    for key in timed:
        assert r[key] > 0 and math.isfinite(r[key]), key
    graphs = {key: r[f"{key} graphs"] for key in timed}
    assert graphs["r=0 f=1.0 eager"] == graphs["r=1 f=0.25 eager"] == [0, 0]
    assert graphs["r=0 f=1.0 compiled"] == [1, 0]  # the trained forward
    assert graphs["r=1 f=0.25 compiled each"] == [1, 0]  # the probes (no gradients)
    assert r["check r=0"] <= 1e-5 and r["check r=1"] <= 1e-5
    if protocol:
        assert graphs["r=1 f=0.25 compiled auto"] == [0, 0]  # a CPU's auto: each
        assert r["r=0 f=1.0 compiled / eager"] == pytest.approx(
            r["r=0 f=1.0 compiled"] / r["r=0 f=1.0 eager"]
        )
        assert r["plain"] > 0
    else:
        assert r["r=0 f=1.0 compiled / eager"] > 0 and r["r=1 f=0.25 compiled each / eager"] > 0
    text = capsys.readouterr().out
    assert "### resnet18" in text and "| r=0 f=1.0 compiled |" in text
