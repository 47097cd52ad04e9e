"""The search stage: every budget (FLOPs, params, latency or several) searched on one trained
supernet, written to search.json.

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
from widthc.latency.model import LatencyModel
from widthc.loop import Bar
from widthc.run import SEARCH
from widthc.space import Budget, human

SNAPSHOT_SECONDS = 5.0  # search.json is rewritten this often during a search,
SNAPSHOT_EVALUATIONS = 10  # or after this many new widths, whichever comes first


def run(ctx: Context) -> None:
    """Every budget searched on the trained supernet (one stage; see stages/multistage.py)."""
    cfg, program = ctx.config.search, ctx.program
    net = ctx.supernet(trained=True)
    scorer = MaxMax(
        net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=ctx.config.seed
    )
    preload(scorer, program, ctx.run.read_json(SEARCH))
    results = []
    latency = ctx.latency if ctx.measures_latency else None
    for text, budget in ctx.budgets.items():
        result, seconds = search_one(ctx, program, scorer, cfg, text, budget, results, latency)
        results.append(result_json(program, net, scorer, result, text, seconds, latency))
        write(ctx, program, results, complete=False, latency=latency)
        best, base = result.best, result.uniform
        ms = f", {human(results[-1]['latency'], 'latency')} predicted" if latency else ""
        ctx.echo(
            f"budget {text}: searched width scores {best.score:.4f} (uniform {base.score:.4f}) "
            f"at {human(results[-1]['flops'])} FLOPs{ms}; {len(result.history)} widths "
            f"scored in {seconds:.0f} s"
        )
    write(ctx, program, results, complete=True, latency=latency)


def search_one(
    ctx: Context, program, scorer: MaxMax, cfg: SearchConfig, text: str, budget: Budget,
    done: list, latency: LatencyModel | None = None,
):  # fmt: skip
    """One budget's search, with a progress bar and snapshots of the widths scored so far."""
    ledger: list[dict] = []
    last = [time.perf_counter()]

    def score(width: np.ndarray) -> tuple[float, int]:
        s = scorer(program.space.choice(width))
        ledger.append(_entry(program, width, s, budget, latency))
        due = len(ledger) % SNAPSHOT_EVALUATIONS == 0 or interrupt.requested()
        if due or time.perf_counter() - last[0] > SNAPSHOT_SECONDS:
            partial = {"text": text, "budget": budget.value("flops"), "partial": True,
                       "limits": budget.to_json(), "history": ledger}  # fmt: skip
            write(ctx, program, [*done, partial], complete=False, latency=latency)
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


def result_json(
    program, net, scorer, result: searchers.SearchResult, text, seconds, latency=None
) -> dict:
    """One budget's entry of search.json (latency: predicted, where the run models it)."""
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
            **({"latency": latency.latency(cand)} if latency else {}),
            **({"latency_by_layer": latency.per_layer(cand)} if latency else {}),
            "load": e.load,
            "score": e.score,
        }

    return {
        "budget": result.budget.value("flops"),
        "limits": result.budget.to_json(),
        "text": text,
        "searcher": result.searcher,
        "seed": result.seed,
        "options": result.options,
        **described(result.best),
        "uniform": described(result.uniform),
        "evaluations": len(result.history),
        "seconds": round(seconds, 3),
        "history": [
            _entry(program, e.width, scorer.cache[space.choice(e.width).ks()], result.budget,
                   latency)
            for e in result.history
        ],
    }  # fmt: skip


def write(ctx: Context, program, results: list[dict], complete: bool, latency=None) -> None:
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
            **({"latency_model": _described(latency)} if latency else {}),
        },
    )


def _described(latency: LatencyModel) -> dict:
    """The latency model as the report reads it: the runtime, and the full model per layer."""
    return {
        **latency.to_json(),
        "full_ms": latency.latency(),
        "full_by_layer": latency.per_layer(),
    }


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


def _entry(program, width, s: Score, budget: Budget, latency: LatencyModel | None) -> dict:
    row = np.asarray(width, dtype=np.int64)[None]
    return {
        "width": [int(k) for k in width],
        "flops": float(program.flops_many(row)[0]),
        **({"latency": float(latency.latency_many(row)[0])} if latency else {}),
        "load": float(budget.load(row)[0]),
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
