"""The search stage: every budget (FLOPs, params, latency or several) searched on one trained
supernet, written to search.json.

Scores are max-max over each width's candidates (widthc.evaluate.MaxMax), cached across
budgets. search.json is rewritten atomically every few seconds while a search runs, with the
widths scored so far; a search that is killed and resumed preloads them (when they were scored
the same way: --score, --score-steps), and since searchers are deterministic for a seed, it
replays the same steps without scoring them again.
"""

from __future__ import annotations

import dataclasses
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
from widthc.precision import Precision
from widthc.run import SEARCH
from widthc.space import Budget, human

SNAPSHOT_SECONDS = 5.0  # search.json is rewritten this often during a search,
SNAPSHOT_EVALUATIONS = 10  # or after this many new widths, whichever comes first
FINALISTS = 8  # widths measured at the end of a search under a latency limit (one chunk)


def run(ctx: Context) -> None:
    """Every budget searched on the trained supernet (one stage; see stages/multistage.py)."""
    cfg, program = ctx.config.search, ctx.program
    net = ctx.supernet(trained=True, refined=False)  # --refine-epochs refines after this
    precision = Precision.of(ctx.config.train, ctx.device)  # one way for every budget
    scorer = ctx.scorer(net, precision, tuned=not cfg.tune_top)  # --score-top: tuned later
    preload(scorer, program, ctx.run.read_json(SEARCH), scoring(ctx))
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

    t0 = time.perf_counter()
    result = _searched(ctx, program, score, cfg, text, budget)
    if latency is not None and budget.value("latency") and program is ctx.program:
        result, ratio = measured_winner(ctx, result, text, (cfg.budget_band, 1.0), latency)
        if ratio is not None:  # none within: the model under-predicts here by `ratio`
            result = _again(ctx, program, score, cfg, text, result, ratio, latency)
    return result, time.perf_counter() - t0


def _again(ctx: Context, program, score, cfg, text: str, result, ratio: float, latency):
    """The search once more under the latency limit over `ratio` (what the model predicts for
    widths that measure within it, near these), its best widths measured against the limit."""
    budget, limit = result.budget, result.budget.value("latency")
    smallest = float(latency.latency_many(program.space.smallest()[None])[0])
    said = f"budget {text}: the best widths measured {ratio:.2f}x their prediction"
    if limit / ratio < smallest:
        ctx.echo(f"{said}; the smallest width is predicted over that: the best stays")
        return result
    ctx.echo(f"{said}; searching again under {human(limit / ratio, 'latency')} predicted")
    again = _searched(
        ctx, program, score, cfg, f"{text} again", budget.scaled("latency", 1 / ratio)
    )
    again, _ = measured_winner(ctx, dataclasses.replace(again, budget=budget), text, (0.0, 1.0),
                               latency)  # fmt: skip
    seen = {e.width for e in result.history}
    history = result.history + [e for e in again.history if e.width not in seen]
    load = float(budget.load(np.array(again.best.width))[0])
    return dataclasses.replace(
        result, best=dataclasses.replace(again.best, load=load), history=history
    )


def _searched(ctx: Context, program, score, cfg: SearchConfig, text: str, budget: Budget):
    with WidthsBar(f"search {text}", _expected_evaluations(cfg), ctx.progress) as bar:
        return searchers.search(
            program.space, program.flops_many, score, budget, cfg.search,
            seed=ctx.config.seed, band=(cfg.budget_band, 1.0),
            max_evals=cfg.max_evals, progress=bar.update, population=cfg.population,
            generations=cfg.generations, samples=cfg.samples,
        )  # fmt: skip


def measured_winner(ctx: Context, result, text: str, band, latency: LatencyModel):
    """Under a latency limit, the best-scoring widths the model predicts within the budget
    (FINALISTS of them, with loads in `band`) are measured for real (cached, like the widths
    the model was fitted to) and the best of those measured within the limit wins: a search on
    a model finds the widths it under-predicts (the winner's curse), so the winner is timed
    before it is slimmed. Returns the result and, where none measures within the limit, the
    finalists' median of measured over predicted latency (else None; the best stays)."""
    limit = result.budget.value("latency")
    loads = result.budget.load(np.array([e.width for e in result.history], dtype=np.int64))
    pool = [e for e, load in zip(result.history, loads) if band[0] <= load <= band[1]]
    pool = [result.best, *(e for e in pool if e.width != result.best.width)]
    finalists = sorted(pool, key=lambda e: -e.score)[:FINALISTS]  # stable: the choice first
    widths = [np.array(e.width, dtype=np.int64) for e in finalists]
    ms = measured(ctx, widths, f"the {len(widths)} best widths of {text}", latency)
    within = [e for e, m in zip(finalists, ms) if m <= limit]
    ctx.echo(
        f"budget {text}: {len(within)} of the {len(finalists)} best widths measure within "
        f"{human(limit, 'latency')} ({', '.join(human(m, 'latency') for m in ms)})"
        + (f"; the best of them wins (score {within[0].score:.4f})" if within else "")
    )
    if within:
        return dataclasses.replace(result, best=within[0]), None
    return result, float(np.median(ms / latency.latency_many(np.stack(widths))))


def measured(ctx: Context, widths: list[np.ndarray], what: str, latency: LatencyModel):
    """The run's widths measured for real (cached), in ms on the latency budget's scale."""
    ctx.measurer.measure(widths, what)
    scale = latency.latency() / ctx.measurer.full_ms()  # measured ms -> the budget's scale
    return np.array([ctx.measurer.ms(w) * scale for w in widths])


def result_json(
    program, net, scorer, result: searchers.SearchResult, text, seconds, latency=None
) -> dict:
    """One budget's entry of search.json (latency: predicted, where the run models it)."""
    space = program.space
    return {
        "budget": result.budget.value("flops"),
        "limits": result.budget.to_json(),
        "text": text,
        "searcher": result.searcher,
        "seed": result.seed,
        "options": result.options,
        **describe(program, net, result.best, latency),
        "uniform": describe(program, net, result.uniform, latency),
        "evaluations": len(result.history),
        "seconds": round(seconds, 3),
        "history": [
            _entry(program, e.width, scorer.cache[space.choice(e.width).ks()], result.budget,
                   latency)
            for e in result.history
        ],
    }  # fmt: skip


def describe(program, net, e: searchers.Evaluation, latency=None) -> dict:
    """One scored width as search.json describes it: its channels and bins per group, the
    winning candidate (its choice, FLOPs, params, predicted latency), its load and score."""
    choice = program.space.choice(e.width)
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
            **scoring(ctx),
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


def scoring(ctx: Context) -> dict:
    """How this run scores widths, as search.json records it: what max-max maximises and, with
    --score-steps (or --score-epochs E: its E too), the fine-tuning before each score (steps,
    learning rate), or with --score-top only before each finalist's (`finalist_tuning`: the
    search's own are shared; with --score-climb, its M; with --score-candidates best,
    "candidates": "best")."""
    s = ctx.config.search
    tuning = {"steps": ctx.score_steps, "lr": s.score_lr or ctx.config.train.lr}
    tuning |= {"epochs": s.tune_passes} if s.tune_passes else {}  # --score-epochs E
    tuning |= {"candidates": "best"} if s.score_candidates == "best" else {}  # absent: all
    if s.tune_top:  # tuned from the refined supernet's weights with --refine-epochs
        refined = {"refine_epochs": s.refine_epochs} if s.refine_epochs else {}
        climb = {"climb": s.score_climb} if s.score_climb else {}  # --score-climb M
        if s.score_again:  # --score-again M, --score-again-steps N2
            climb = {**climb, "again": s.score_again, "again_steps": s.again_steps(ctx.score_steps)}
        return {"score": ctx.score_name,
                "finalist_tuning": {**tuning, "top": s.tune_top, **refined, **climb}}  # fmt: skip
    return {"score": ctx.score_name, **({"score_tuning": tuning} if s.tuned else {})}


def preload(scorer: MaxMax, program, previous: dict | None, scored: dict) -> int:
    """Scores of an earlier (interrupted) search of this supernet, scored the same way
    (`scored`: `scoring`'s record): not computed again."""
    if not previous or previous.get("binning") != program.binning:
        return 0
    same = previous.get("score", scored["score"]) == scored["score"]  # older files: no "score"
    if not same or previous.get("score_tuning") != scored.get("score_tuning"):
        return 0  # scored another way (--score, --score-steps, --score-lr): scored again
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


class WidthsBar(Bar):
    """A bar of widths scored (the search's, and the tuned finalists' of stages/rescore.py,
    climb.py and top.py): widths per second, the best score so far."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        columns = [label, "{task.fields[rate]} widths/s, best {task.fields[best]}"]
        super().__init__(columns, total, 0, enabled, best="-")

    def update(self, n: int, best: float) -> None:
        self.move(n, best=f"{best:.4f}")
