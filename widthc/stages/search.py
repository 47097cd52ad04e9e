"""The search stage: every budget searched on one trained supernet, written to search.json.

Scores are max-max over each width's candidates (widthc.evaluate.MaxMax), cached across
budgets. search.json is rewritten atomically every few seconds while a search runs, with the
widths scored so far; a search that is killed and resumed preloads them, and since searchers
are deterministic for a seed, it replays the same steps without scoring them again.
"""

from __future__ import annotations

import time

import numpy as np

from widthc import interrupt
from widthc import search as searchers
from widthc.config import SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, Score
from widthc.loop import Bar
from widthc.precision import Precision
from widthc.run import SEARCH
from widthc.space import human

SNAPSHOT_SECONDS = 5.0  # search.json is rewritten this often during a search,
SNAPSHOT_EVALUATIONS = 10  # or after this many new widths, whichever comes first


def run(ctx: Context) -> None:
    """Every budget searched on the trained supernet (one stage; see stages/multistage.py)."""
    cfg, program = ctx.config.search, ctx.program
    net = ctx.supernet(trained=True)
    precision = Precision.of(ctx.config.train, ctx.device)  # one way for every budget
    scorer = MaxMax(
        net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=ctx.config.seed,
        precision=precision,
    )  # fmt: skip
    preload(scorer, program, ctx.run.read_json(SEARCH))
    results = []
    for text, budget in ctx.budgets.items():
        result, seconds = search_one(ctx, program, scorer, cfg, text, budget, results)
        results.append(result_json(program, net, scorer, result, text, seconds))
        write(ctx, program, results, complete=False)
        best, base = result.best, result.uniform
        ctx.echo(
            f"budget {text}: searched width scores {best.score:.4f} (uniform {base.score:.4f}) "
            f"at {human(results[-1]['flops'])} FLOPs; {len(result.history)} widths "
            f"scored in {seconds:.0f} s"
        )
    write(ctx, program, results, complete=True)


def search_one(
    ctx: Context, program, scorer: MaxMax, cfg: SearchConfig, text: str, budget: float, done: list
):
    """One budget's search, with a progress bar and snapshots of the widths scored so far."""
    ledger: list[dict] = []
    last = [time.perf_counter()]

    def score(width: np.ndarray) -> tuple[float, int]:
        s = scorer(program.space.choice(width))
        ledger.append(_entry(width, program.flops_many(width[None])[0], s))
        due = len(ledger) % SNAPSHOT_EVALUATIONS == 0 or interrupt.requested()
        if due or time.perf_counter() - last[0] > SNAPSHOT_SECONDS:
            partial = {"text": text, "budget": budget, "partial": True, "history": ledger}
            write(ctx, program, [*done, partial], complete=False)
            last[0] = time.perf_counter()
        interrupt.check()  # Ctrl-C: the widths scored so far are saved
        return s.value, s.candidate

    total = _expected_evaluations(cfg)
    t0 = time.perf_counter()
    with _Bar(f"search {text}", total, ctx.progress) as bar:
        result = searchers.search(
            program.space, program.flops_many, score, budget, cfg.search,
            seed=ctx.config.seed, band=(cfg.budget_band, 1.0),
            max_evals=cfg.max_evals, progress=bar.update, population=cfg.population,
            generations=cfg.generations, samples=cfg.samples,
        )  # fmt: skip
    return result, time.perf_counter() - t0


def result_json(program, net, scorer, result: searchers.SearchResult, text, seconds) -> dict:
    """One budget's entry of search.json."""
    space = program.space

    def described(e: searchers.Evaluation) -> dict:
        choice = space.choice(e.width)
        cand = net.candidates(choice)[e.candidate]
        return {
            "width": {
                str(g.id): {"channels": choice.channels(g), "bins": w.k}
                for g in program.searchable
                if (w := choice.width(g.id)) is not None
            },
            "candidate": e.candidate,
            "candidate_choice": cand.to_json(),
            "width_flops": e.flops,
            "flops": program.flops(cand),
            "params": program.params(cand),
            "score": e.score,
        }

    return {
        "budget": result.budget,
        "text": text,
        "searcher": result.searcher,
        "seed": result.seed,
        "options": result.options,
        **described(result.best),
        "uniform": described(result.uniform),
        "evaluations": len(result.history),
        "seconds": round(seconds, 3),
        "history": [
            _entry(e.width, e.flops, scorer.cache[program.space.choice(e.width).ks()])
            for e in result.history
        ],
    }


def write(ctx: Context, program, results: list[dict], complete: bool) -> None:
    everything = [
        searchers.Evaluation(tuple(h["width"]), h["flops"], h["score"], h["candidate"])
        for r in results
        for h in r["history"]
    ]
    unique = list({e.width: e for e in everything}.values())
    ctx.run.write_json(
        SEARCH,
        {
            "groups": [int(g) for g in program.space.ids],
            "binning": program.binning,
            "offset": ctx.config.offset,
            "metric": ctx.metric_name,
            "score": ctx.score_name,
            "results": results,
            "front": [
                {"width": list(e.width), "flops": e.flops, "score": e.score}
                for e in searchers.pareto_front(unique)
            ],
            "complete": complete,
        },
    )


def preload(scorer: MaxMax, program, previous: dict | None) -> int:
    """Scores of an earlier (interrupted) search of this supernet: not computed again."""
    if not previous or previous.get("binning") != program.binning:
        return 0
    if previous.get("groups") != [int(g) for g in program.space.ids]:
        raise WidthcError(
            "search.json describes other groups than this model's: start over with --force"
        )
    known = [
        (program.space.choice(np.array(h["width"])), Score.from_json(h))
        for r in previous.get("results", [])
        for h in r.get("history", [])
    ]
    scorer.preload(known)
    return len(known)


def _entry(width, flops: float, s: Score) -> dict:
    return {
        "width": [int(k) for k in width],
        "flops": float(flops),
        "score": s.value,
        "candidate": s.candidate,
        "candidates": list(s.candidates),
    }


def _expected_evaluations(cfg) -> int | None:
    n = {
        "evolutionary": cfg.population * (cfg.generations + 1),
        "random": cfg.samples + 1,
        "uniform": 1,
    }.get(cfg.search)
    if n is not None and cfg.max_evals is not None:
        n = min(n, cfg.max_evals + 1)
    return n


class _Bar(Bar):
    """The search bar: widths scored, widths per second, the best score so far."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        columns = [label, "{task.fields[rate]} widths/s, best {task.fields[best]}"]
        super().__init__(columns, total, 0, enabled, best="-")

    def update(self, n: int, best: float) -> None:
        self.move(n, best=f"{best:.4f}")
