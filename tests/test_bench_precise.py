"""bench/known_precise.py: the stored widths' channels become the program's widths exactly, and
the recovered share and the margins are the known-answer targets' arithmetic on the mean of the
stored retraining and the two extra ones (seeds run seed + 100, + 200)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import known_answer  # noqa: E402
import known_precise  # noqa: E402


def test_channels_round_trip_to_the_programs_width_or_are_refused():
    program = known_answer.default_program("bottleneck")
    for channels in ([96, 4, 96], [34, 33, 34], [78, 15, 28]):
        choice = known_precise.choice_of(program, channels)
        assert known_answer.channels_of(program, choice) == channels
    with pytest.raises(ValueError):  # the outer groups' bins hold 2 channels each
        known_precise.choice_of(program, [33, 4, 96])


# per seed: the stored (val, test) of oracle, uniform, widthc, and their two extra retrainings
STORED = {0: (1.0, 0.5, 0.9), 1: (1.2, 0.6, 0.9), 2: (1.0, 0.4, 0.9)}
EXTRA = {0: (0.7, 0.5, 0.6), 1: (0.9, 0.6, 0.8), 2: (0.7, 0.4, 0.5)}  # both extra seeds alike
CHANNELS = {"oracle": [96, 4, 96], "uniform": [34, 33, 34], "widthc": [78, 15, 28]}


@pytest.fixture
def stored(tmp_path, monkeypatch):
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_precise, "CACHE", tmp_path / "precise")
    for seed, values in STORED.items():
        run = {"seed": seed, "task": "bottleneck", "lever": "default"}
        done = {}
        for (w, channels), v, e in zip(CHANNELS.items(), values, EXTRA[seed]):
            run[w] = {"val": v, "test": v / 2, "channels": channels}
            for extra in (seed + 100, seed + 200):  # the extra seeds; + 1 is the tournament's
                done[known_precise.key(channels, extra)] = {"val": e, "test": e / 2}
            done[known_precise.key(channels, seed + 1)] = {"val": 99.0, "test": 99.0}
        known_answer._write(tmp_path / "default" / f"bottleneck-s{seed}.json", run)
        known_answer._write(tmp_path / "precise" / f"bottleneck-s{seed}.json", done)
    return tmp_path


def _expected(per_seed):
    """recovered and the two margins from (oracle, uniform, widthc) per seed, by hand."""
    gap = [o - u for o, u, _ in per_seed]
    won = [w - u for _, u, w in per_seed]
    return (
        statistics.mean(won) / statistics.mean(gap),
        statistics.mean(won) / statistics.stdev(won),
        statistics.mean(gap) / statistics.stdev(gap),
    )


def test_recovered_and_margins_with_one_and_with_three_retrainings(stored):
    runs = known_answer.summaries("default", "bottleneck")
    one = known_precise.measures(runs)
    three = known_precise.measures(
        [known_precise.averaged(r, known_precise.cache("bottleneck", r["seed"])) for r in runs]
    )
    mean3 = [tuple((s + 2 * e) / 3 for s, e in zip(STORED[k], EXTRA[k])) for k in STORED]
    for got, values in ((one, list(STORED.values())), (three, mean3)):
        recovered, margin, oracle_margin = _expected(values)
        assert got["recovered_val"] == pytest.approx(recovered)
        assert got["recovered_test"] == pytest.approx(recovered)  # test = val / 2
        assert got["margin"] == pytest.approx(margin)
        assert got["oracle_margin"] == pytest.approx(oracle_margin)
    assert three["recovered_val"] != pytest.approx(one["recovered_val"])  # the extras count
    row = known_precise.row("default", "bottleneck").split(" | ")
    assert row[2] == "0,1,2"
    assert row[4] == f"{100 * one['recovered_val']:.0f}% / {100 * three['recovered_val']:.0f}%"
    here, _, _ = _expected([EXTRA[k] for k in STORED])  # the 2 extra retrainings alone
    assert row[8] == f"{100 * here:.0f}%"
    variances = [
        statistics.variance([s, e, e]) for k in STORED for s, e in zip(STORED[k], EXTRA[k])
    ]
    assert row[9] == f"{statistics.mean(variances) ** 0.5:.4f} |"
    met = known_precise.met("default", ("bottleneck",))  # recovered 71% / 61%, margin 4.0 / 11.5
    assert "recovered >= 90% on 0 / 0 of 1 tasks, margin > 3 on 1 / 1" in met


def test_a_seed_missing_an_extra_retraining_is_left_out(stored):
    done = known_precise.cache("bottleneck", 2)
    del done[known_precise.key(CHANNELS["uniform"], 202)]
    known_answer._write(stored / "precise" / "bottleneck-s2.json", done)
    run = known_answer.summaries("default", "bottleneck")[2]
    assert known_precise.averaged(run, done) is None
    assert known_precise.row("default", "bottleneck").split(" | ")[2] == "0,1"


def test_a_seed_without_a_run_is_retrained_in_its_tasks_configuration_under_that_seed(
    tmp_path, monkeypatch
):
    """The context of a seed whose default run is not here: another seed's run configuration,
    the seed alone changed; a seed with its own run opens that run."""
    from widthc.config import RunConfig

    monkeypatch.setattr(known_answer, "RUNS", tmp_path)
    for seed in (0, 1):
        config = {**RunConfig(model="m.py", flops=("3072",)).to_json(), "seed": seed}
        known_answer._write(
            tmp_path / "default" / f"bottleneck-cls-s{seed}" / "config.json", config
        )
    own = known_precise.context("bottleneck-cls", 1)
    assert own.config.seed == 1 and own.run.path == tmp_path / "default" / "bottleneck-cls-s1"
    derived = known_precise.context("bottleneck-cls", 3)
    assert derived.config.seed == 3
    assert derived.config.to_json() == {**own.config.to_json(), "seed": 3}
    assert not derived.run.path.exists()
    with pytest.raises(ValueError):  # no run of the task at all
        known_precise.context("residual", 0)


def test_paired_compares_two_levers_searched_widths_on_the_mean_of_3_retrainings(stored):
    """`--paired BASE:LEVER`: per task and seed the lever's searched width minus the base's, each
    the mean of its 3 retrainings; the sign test counts the pairs the lever wins (ties dropped),
    the Wilcoxon test reads the deltas over the base's oracle gap (mean of 3 as well)."""
    from scipy import stats

    lever = {0: (1.0, 0.8), 1: (0.9, 0.8), 2: (0.6, 0.5)}  # stored val, both extra retrainings
    for seed, (v, e) in lever.items():
        run = known_answer.summaries("default", "bottleneck")[seed]
        run = {**run, "lever": "better", "widthc": {"val": v, "test": v, "channels": [80, 14, 26]}}
        known_answer._write(stored / "better" / f"bottleneck-s{seed}.json", run)
        done = known_precise.cache("bottleneck", seed)
        for extra in (seed + 100, seed + 200):
            done[known_precise.key([80, 14, 26], extra)] = {"val": e, "test": e}
        known_answer._write(stored / "precise" / f"bottleneck-s{seed}.json", done)

    found = known_precise.pairs(["default:better"], ["bottleneck"], {0, 1, 2})
    result = known_precise.paired(found)

    mean3 = lambda stored_, extra: (stored_ + 2 * extra) / 3  # noqa: E731
    base = {s: mean3(STORED[s][2], EXTRA[s][2]) for s in STORED}
    deltas = [mean3(*lever[s]) - base[s] for s in (0, 1, 2)]  # +0.2, 0 (a tie), −0.1667
    assert result["tasks"]["bottleneck"]["deltas"] == pytest.approx(deltas)
    assert (result["wins"], result["n"]) == (1, 2)
    assert result["sign_p"] == pytest.approx(stats.binomtest(1, 2, alternative="greater").pvalue)
    gap = statistics.mean(mean3(STORED[s][0], EXTRA[s][0]) - mean3(STORED[s][1], EXTRA[s][1])
                          for s in STORED)  # fmt: skip
    assert result["scaled_mean"] == pytest.approx(statistics.mean(deltas) / gap)
    scaled = [d / gap for d in deltas]
    assert result["wilcoxon_p"] == pytest.approx(
        stats.wilcoxon(scaled, alternative="greater").pvalue
    )
    assert known_precise.pairs(["default:better"], ["bottleneck"], {3}) == {"bottleneck": []}


def test_fill_retrains_each_width_once_per_extra_seed_and_shares_it_between_levers(
    stored, monkeypatch
):
    """Every width of the levers' summaries of one task and seed, retrained under the run's seed
    + 100 and + 200 (never + 1, the tournament's) through known_answer.retrain_width; a width two
    levers share (uniform, the oracle) once; a cached retraining is not redone."""
    seed = 0
    other = {**known_answer.summaries("default", "bottleneck")[seed], "lever": "other"}
    other["widthc"] = {**other["widthc"], "channels": [80, 14, 26]}
    known_answer._write(stored / "other" / "bottleneck-s0.json", other)
    known_answer._write(stored / "precise" / "bottleneck-s0.json", {})  # nothing cached
    program = known_answer.default_program("bottleneck")
    ctx = type("Ctx", (), {"program": program, "config": type("C", (), {"seed": seed})()})()
    monkeypatch.setattr(known_precise, "context", lambda task, s: ctx)
    asked = []

    def retrain(ctx_, choice, folder, seed_):
        asked.append((tuple(known_answer.channels_of(program, choice)), seed_))
        return {"val": float(seed_), "test": 0.0}

    monkeypatch.setattr(known_answer, "retrain_width", retrain)
    assert known_precise.fill("bottleneck", seed, ("default", "other")) == 8
    widths = [(96, 4, 96), (34, 33, 34), (78, 15, 28), (80, 14, 26)]
    assert sorted(asked) == sorted((w, seed + e) for w in widths for e in (100, 200))
    done = known_precise.cache("bottleneck", seed)
    assert done[known_precise.key([80, 14, 26], 200)] == {"val": 200.0, "test": 0.0}
    assert known_precise.fill("bottleneck", seed, ("default", "other")) == 0  # all cached


def test_retrain_width_trains_under_the_seed_it_is_given(monkeypatch, tmp_path):
    """known_answer.retrain_width: the model built and trained under `seed` (the run's when
    None), measured on val and test."""
    calls = []
    monkeypatch.setattr(known_answer, "fresh", lambda ctx, c, seed=None: calls.append(seed) or c)
    monkeypatch.setattr(
        known_answer, "train", lambda ctx, m, f, e, label, seed=None: calls.append(seed) or m
    )
    monkeypatch.setattr(known_answer, "measure", lambda model, split, metric, device: split)
    ctx = type("Ctx", (), {"splits": type("S", (), {"val": 1.0, "test": 2.0})(),
                           "metric": None, "device": "cpu"})()  # fmt: skip
    assert known_answer.retrain_width(ctx, "w", tmp_path / "a", 103) == {"val": 1.0, "test": 2.0}
    known_answer.retrain_width(ctx, "w", tmp_path / "b")
    assert calls == [103, 103, None, None]


@pytest.mark.parametrize(
    "argv", [["--paired", "default"], ["--paired", "default:x", "--seeds", "7"]]
)
def test_a_bad_paired_request_ends_in_one_sentence_and_exit_2(stored, monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["known_precise.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        known_precise.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("known_precise.py: error: ")
