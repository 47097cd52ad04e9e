"""bench/quality.py and bench/ranking.py (issue 10): the commands each method runs, the tables'
arithmetic, the Torch-Pruning baseline meeting the budget as widthc counts it, Kendall tau and
Spearman rho as scipy computes them, and (slow) the quick benchmark end to end."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import widthc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402
import quality_table  # noqa: E402


def test_each_method_runs_widthc_slim_with_its_own_options_and_the_shared_recipe(tmp_path):
    bench = quality.DATASETS["mnist1d"]
    cmds = {t.key: quality.command(t, "mnist1d", bench, tmp_path)
            for t in quality.tasks(list(quality.METHODS)[:-1], [3])}  # fmt: skip
    assert set(cmds) == {"widthc-s3", "fixed-pattern-s3", "random-candidate-s3",
                         "uniform-bins-s3", "widthc-finetune-s3", "greedy-search-s3", "random-search-s3",
                         "multi-stage-25pct-s3", "multi-stage-50pct-s3",
                         "widthc-pretrained-s3", "widthc-pretrained-from-supernet-s3"}  # fmt: skip
    shared = [*bench.recipe.cli(), *bench.search.cli(), "--seed", "3"]
    for key, cmd in cmds.items():
        text = " ".join(cmd)
        assert all(f" {a} " in f" {text} " for a in shared), key
        assert cmd[cmd.index("--out") + 1] == str(tmp_path / key)
    assert "--offset 0" in " ".join(cmds["fixed-pattern-s3"])
    assert "--minmin-start 1" in " ".join(cmds["random-candidate-s3"])
    assert f"--uniform-bins {bench.uniform_bins}" in " ".join(cmds["uniform-bins-s3"])
    greedy = cmds["greedy-search-s3"]
    assert greedy[greedy.index("--from") + 1] == str(tmp_path / "widthc-s3")
    assert "--from" not in cmds["widthc-s3"]
    finetune = cmds["widthc-finetune-s3"]
    assert "--finetune" in finetune and finetune[finetune.index("--from") + 1] == str(
        tmp_path / "widthc-s3"
    )
    multi = cmds["multi-stage-25pct-s3"]
    assert multi[multi.index("--flops") + 1] == "25%" and "--stages" in multi
    assert cmds["widthc-s3"][cmds["widthc-s3"].index("--flops") + 1] == "25%,50%"
    assert (
        "--pretrained" in cmds["widthc-pretrained-s3"] and "--pretrained" not in cmds["widthc-s3"]
    )


@pytest.mark.parametrize("data", sorted(quality.DATASETS))
def test_uniform_bins_k_is_the_median_bin_count_of_the_flops_sensitive_binning(data):
    from widthc.frontends.models import load_model

    bench = quality.DATASETS[data]
    src = load_model(str(ROOT / bench.model))
    program = widthc.compile(src.model, src.example_inputs)
    counts = sorted(len(g.bins) for g in program.searchable)
    assert bench.uniform_bins == round(statistics.median(counts))


def _summary(method: str, seed: int, rows: dict) -> dict:
    return {"method": method, "seed": seed, "wall_seconds": 10.0 * (seed + 1), "rows": rows}


def test_table_reports_mean_std_and_paired_differences(tmp_path):
    def entry(acc):
        return {"test": acc, "flops": 90.0, "budget": 100.0}

    for seed, (ours, base, fixed_base) in enumerate([(0.90, 0.85, 0.85), (0.80, 0.80, 0.80)]):
        rows = {"widthc": {"25%": entry(ours)}, "uniform": {"25%": entry(base)}}
        (tmp_path / f"w{seed}.json").write_text(json.dumps(_summary("widthc", seed, rows)))
        rows = {"fixed pattern": {"25%": entry(0.70)}, "uniform": {"25%": entry(fixed_base)}}
        (tmp_path / f"f{seed}.json").write_text(json.dumps(_summary("fixed pattern", seed, rows)))
    text = quality_table.table(tmp_path)
    widthc_row = next(line for line in text.splitlines() if line.startswith("| widthc |"))
    cells = [c.strip() for c in widthc_row.split("|")[1:-1]]
    assert cells[1] == "85.00 ± 7.07"  # mean and sample std of 0.90, 0.80
    assert cells[2] == "2.50 ± 3.54"  # per-seed differences to uniform: 0.05, 0.00
    assert cells[3] == "0.900"
    fixed = next(line for line in text.splitlines() if line.startswith("| fixed pattern |"))
    assert fixed.split("|")[3].strip() == "-12.50 ± 3.54"  # 0.70-0.85, 0.70-0.80
    assert "largest difference between runs 0.00 points" in text


def test_from_a_trained_model_pairs_each_row_with_torch_pruning_fine_tuned(tmp_path):
    def rows(**accs):
        entry = {"flops": 9.0, "budget": 10.0, "seconds": 1.0}
        return {k.replace("_", "-"): {b: {"test": a, **entry} for b in ("25%", "50%")}
                for k, a in accs.items()}  # fmt: skip

    accs = [(0.95, 0.90, 0.93), (0.91, 0.92, 0.90), (0.0, 0.90, 0.90)]
    for seed, (ours, mag, tay) in enumerate(accs):
        if seed < 2:  # seed 2: Torch-Pruning alone, left out of the comparison
            summary = _summary("widthc-pretrained", seed, rows(widthc_pretrained=ours))
            (tmp_path / f"p{seed}.json").write_text(json.dumps(summary))
        tp = rows(tp_magnitude_finetune=mag, tp_taylor_finetune=tay)
        (tmp_path / f"t{seed}.json").write_text(json.dumps(_summary("torch-pruning", seed, tp)))
    text = quality_table.versus(tmp_path)
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in text.splitlines()[2:]}  # fmt: skip
    # widthc-pretrained - magnitude: +0.05, -0.01; - Taylor: +0.02, +0.01; magnitude - Taylor:
    # -0.03, +0.02
    assert cells["widthc-pretrained"][:4] == ["2", "93.00 ± 2.83", "2.00 ± 4.24", "1.50 ± 0.71"]
    assert cells["tp-magnitude-finetune"][:4] == ["2", "91.00 ± 1.41", "-", "-0.50 ± 3.54"]
    assert "From the trained full model" in quality_table.table(tmp_path)
    for p in tmp_path.glob("p*.json"):
        p.unlink()
    assert quality_table.versus(tmp_path) == ""  # no widthc-pretrained run: no such table
    assert "From the trained full model" not in quality_table.table(tmp_path)


def test_supernet_settings_are_paired_by_seed_with_the_default(tmp_path):
    import pretrained

    def summary(seed, val, test, largest):
        row = {b: {"val": val, "test": test} for b in ("25%", "50%")}
        rows = {"widthc-pretrained": row}
        out = {
            **_summary("widthc-pretrained", seed, rows),
            "supernet": {"val_acc_largest": largest},
        }
        return json.dumps(out)

    default, gentle = tmp_path / "default", tmp_path / "gentle"
    for folder in (default, gentle):
        folder.mkdir()
    for seed, (val, test) in enumerate([(0.90, 0.80), (0.92, 0.84), (0.50, 0.50)]):
        (default / f"widthc-pretrained-s{seed}.json").write_text(summary(seed, val, test, 0.7))
    for seed, (val, test) in enumerate([(0.93, 0.81), (0.93, 0.86)]):  # seed 2 not run
        (gentle / f"widthc-pretrained-s{seed}.json").write_text(summary(seed, val, test, 0.9))
    text = pretrained.settings_table({"default": default, "lr 0.1": gentle})
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in text.splitlines()[2:]}  # fmt: skip
    assert cells["default"][:2] == ["3", "77.33 ± 23.69"]
    assert cells["default"][5:9] == ["-"] * 4
    # paired on seeds 0 and 1 only: val +0.03, +0.01; test +0.01, +0.02
    assert cells["lr 0.1"][0] == "2"
    assert cells["lr 0.1"][5] == "2.00 ± 1.41" and cells["lr 0.1"][7] == "1.50 ± 0.71"
    assert cells["lr 0.1"][9] == "90.00 ± 0.00"


def test_a_run_reusing_one_neither_stored_nor_asked_for_stops_instead_of_waiting(tmp_path):
    todo = quality.tasks(["widthc-pretrained from supernet"], [0])
    args = type("Args", (), {"jobs": 1, "quick": False, "variant": None})()
    with pytest.raises(SystemExit, match="add 'widthc-pretrained' to --methods"):
        quality.run_all(todo, "mnist1d", args, tmp_path / "out", tmp_path / "results")
    (tmp_path / "results").mkdir()  # stored: nothing is left to run, nothing waits
    for t in todo + [todo[0].needs()]:
        (tmp_path / "results" / f"{t.key}.json").write_text("{}")
    quality.run_all(todo, "mnist1d", args, tmp_path / "out", tmp_path / "results")


def test_torch_pruning_meets_the_budget_counted_by_widthc_and_replays_on_fresh_weights():
    pytest.importorskip("torch_pruning")
    import prune

    from widthc.frontends.models import load_model

    src = load_model(str(ROOT / "examples" / "mnist1d_cnn.py"))
    example = tuple(src.example_inputs)
    full = widthc.compile(src.model, example).flops()
    trained = src.model
    torch.manual_seed(1)
    fresh = load_model(str(ROOT / "examples" / "mnist1d_cnn.py")).model
    for criterion in prune.CRITERIA:
        batches = [(torch.randn(8, 1, 40), torch.randint(0, 10, (8,)))]
        net, ratio, flops, history = prune.to_budget(trained, example, criterion, 0.25 * full,
                                                     batches)  # fmt: skip
        assert flops == widthc.compile(net, example).flops() <= 0.25 * full
        assert flops > 0.8 * 0.25 * full and 0 < ratio < 1
        scratch = prune.replayed(copy.deepcopy(fresh), example, history)
        assert prune.flops_of(scratch, example) == flops
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        assert {k: v.shape for k, v in scratch.state_dict().items()} == shapes
        w_fresh = scratch.stem[0][0].weight
        assert not torch.equal(w_fresh, net.stem[0][0].weight)  # not the trained weights
        assert trained.stem[0][0].weight.shape[0] == 8  # the model given is left as it was


def test_ranking_correlations_are_scipys_kendall_tau_and_spearman_rho():
    import ranking
    from scipy import stats

    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    c = ranking.correlations(x, y)
    assert c["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert c["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # sum d^2 = 2
    rng = torch.Generator().manual_seed(0)
    a, b = torch.rand(24, generator=rng).tolist(), torch.rand(24, generator=rng).tolist()
    c = ranking.correlations(a, b)
    assert c["kendall_tau"] == pytest.approx(stats.kendalltau(a, b).statistic)
    assert c["spearman_rho"] == pytest.approx(stats.spearmanr(a, b).statistic)


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path):
    """One seed, widthc and Torch-Pruning, one epoch: every row of the summaries is a real
    accuracy at FLOPs within the budget, and the table shows them."""
    pytest.importorskip("torch_pruning")
    res = tmp_path / "results"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py"), "--quick",
         "--out", str(tmp_path / "runs"), "--results", str(res)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    runs = {p.stem: json.loads(p.read_text()) for p in res.glob("*.json")}
    assert set(runs) == {"widthc-s0", "torch-pruning-s0"}
    assert set(runs["widthc-s0"]["rows"]) == {"widthc", "uniform"}
    assert set(runs["torch-pruning-s0"]["rows"]) == {
        f"tp-{c}-{m}" for c in ("magnitude", "taylor") for m in ("scratch", "finetune")
    }
    for run in runs.values():
        for row in run["rows"].values():
            assert set(row) == {"25%", "50%"}
            for e in row.values():
                assert 0.0 <= e["test"] <= 1.0 and 0 < e["flops"] <= e["budget"]
    assert "| widthc |" in out.stdout and "| tp-taylor-finetune |" in out.stdout


def test_ranking_noise_floor_pairs_every_two_seeds_and_splits_the_halves():
    import numpy as np
    import ranking

    rng = np.random.default_rng(0)
    truth = rng.normal(size=24)
    same = np.stack([truth] * 4, axis=1)
    floor = ranking.noise_floor(same)
    assert floor["pairwise_kendall_tau"] == pytest.approx([1.0] * 6)
    assert floor["half_vs_half"]["kendall_tau"] == pytest.approx(1.0)
    noisy = same + rng.normal(scale=3.0, size=same.shape)
    assert ranking.noise_floor(noisy)["pairwise_kendall_tau_mean"] < 0.9


def test_ranking_finds_a_levers_supernet_or_says_which_run_makes_it(tmp_path, monkeypatch):
    import ranking

    monkeypatch.setattr(ranking, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="bench/quality.py --data mnist1d --variant sandwich"):
        ranking.supernet_run("r1-minmin-sandwich", "mnist1d", tmp_path, None, seed=3)
    run = tmp_path / "runs" / "bench" / "levers" / "sandwich" / "mnist1d" / "widthc-s3"
    run.mkdir(parents=True)
    (run / "supernet.pt").write_bytes(b"")
    assert ranking.supernet_run("r1-minmin-sandwich", "mnist1d", tmp_path, None, seed=3) == run


def test_figure_draws_every_method_with_widthc_in_red(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    def entry(acc):
        return {"test": acc, "flops": 90.0, "budget": 100.0}

    for seed, acc in enumerate([0.90, 0.80]):
        rows = {m: {b: entry(acc - 0.01 * i) for b in ("25%", "50%")}
                for i, m in enumerate(("widthc", "uniform"))}  # fmt: skip
        (tmp_path / f"w{seed}.json").write_text(json.dumps(_summary("widthc", seed, rows)))
    png = quality_table.figure(tmp_path, tmp_path / "q.png")
    image = imread(png)[..., :3]
    assert image.shape[0] > 100 and image.std() > 0.05  # a drawn figure, not a blank one
    red = (np.abs(image - np.array([0xD6, 0x27, 0x28]) / 255).max(axis=2) < 0.05).sum()
    assert red > 50  # widthc's dots and bars (matplotlib's C3)


def test_a_table_of_results_elsewhere_draws_its_figure_there(tmp_path, monkeypatch, capsys):
    """`--table --results DIR` (a rerun kept apart, as session 16's) draws its figure in DIR,
    not over the published bench/results/quality-<data>.png (here under a stand-in ROOT, so a
    regression cannot overwrite the real one)."""

    def entry(acc):
        return {"test": acc, "flops": 90.0, "budget": 100.0}

    results = tmp_path / "apart" / "mnist1d"
    results.mkdir(parents=True)
    for seed, acc in enumerate([0.90, 0.80]):
        rows = {m: {"25%": entry(acc)} for m in ("widthc", "uniform")}
        (results / f"w{seed}.json").write_text(json.dumps(_summary("widthc", seed, rows)))
    monkeypatch.setattr(quality, "ROOT", tmp_path / "root")
    argv = ["quality.py", "--table", "--data", "mnist1d", "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)
    quality.main()
    assert (results / "quality-mnist1d.png").is_file()
    assert str(results / "quality-mnist1d.png") in capsys.readouterr().out
    assert not (tmp_path / "root" / "bench" / "results" / "quality-mnist1d.png").exists()
