"""A run directory as the report reads it: every file and every key may be missing.

The report never trusts a run to be finished: a file that is absent or unreadable becomes an
empty value plus one line in `RunData.problems`, and every reader below returns None or an empty
list where its data is missing, so each section of the report can say what it lacks. File
names come from `widthc.run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from widthc.errors import WidthcError
from widthc.evaluate import metric_name
from widthc.run import (
    ANALYSIS,
    CONFIG,
    METRICS,
    PRETRAINED,
    SEARCH,
    SLIM_ONNX,
    STAGES_FILE,
    TRAIN_LOG,
    UNIFORM,
    WIDTHS,
    Run,
    budget_folder,
    budget_text,
)
from widthc.space import KINDS, budget_label, budget_specs

ACCURACY = metric_name(None)  # the default metric's name


@dataclass(frozen=True)
class Budget:
    """One FLOPs budget of the run: its search result and its folder's files (each maybe {})."""

    text: str
    folder: Path | None = None
    result: dict = field(default_factory=dict)  # this budget's entry of search.json "results"
    widths: dict = field(default_factory=dict)  # widths.json
    metrics: dict = field(default_factory=dict)  # metrics.json

    @property
    def flops_target(self) -> float | None:
        return self.result.get("budget", self.widths.get("budget", {}).get("flops"))

    def flops(self) -> tuple[float | None, float | None]:
        """FLOPs per sample (before, after)."""
        f = self.widths.get("flops", {})
        return f.get("before"), f.get("after", self.result.get("flops"))

    def params(self) -> tuple[float | None, float | None]:
        p = self.widths.get("params", {})
        return p.get("before"), p.get("after", self.result.get("params"))

    def test(self, which: str) -> float | None:
        """Test accuracy of 'widthc', 'uniform' or 'original' (None when not measured)."""
        return self.metrics.get("test", {}).get(which)

    def latency(self) -> dict[str, float]:
        """Measured ms of 'original', 'widthc' and 'uniform' (those measured)."""
        return {k: v for k, v in self.metrics.get("latency_ms", {}).items() if v is not None}

    def latency_budget(self) -> float | None:
        """The budget's latency limit in ms (None without one)."""
        limits = self.result.get("limits") or self.widths.get("limits") or []
        return next((lim.get("value") for lim in limits if lim.get("kind") == "latency"), None)

    def predicted(self, which: str = "widthc") -> float | None:
        """The latency model's ms of 'widthc' or 'uniform' (None where the run has none)."""
        entry = self.result if which == "widthc" else self.result.get("uniform", {})
        return entry.get("latency")

    def onnx(self, uniform: bool = False) -> Path | None:
        if self.folder is None:
            return None
        path = self.folder / UNIFORM / SLIM_ONNX if uniform else self.folder / SLIM_ONNX
        return path if path.is_file() else None


@dataclass(frozen=True)
class RunData:
    """Every file of a run directory the report reads, as plain JSON values."""

    path: Path
    config: dict
    analysis: dict
    search: dict
    stages: dict
    train_log: list[dict]
    budgets: list[Budget]
    problems: list[str]  # files that exist but could not be read
    pretrained: dict = field(default_factory=dict)  # pretrained.json (--pretrained runs)

    @property
    def groups(self) -> list[dict]:
        """The channel groups of analysis.json, in graph order (ids follow the graph)."""
        return sorted(self.analysis.get("groups", []), key=lambda g: g.get("id", 0))

    def searchable(self) -> list[tuple[int, str]]:
        """(id, name) of every searchable group, in graph order; from widths.json without
        analysis.json."""
        groups = self.groups
        if not groups:
            groups = next((b.widths["groups"] for b in self.budgets if "groups" in b.widths), [])
        out = [(g["id"], g.get("name", f"group{g['id']}")) for g in groups if g.get("searchable")]
        return sorted(out)

    def heads(self) -> dict[int, int]:
        """Searchable groups of attention heads: id -> their number of heads (analysis.json's
        `unit` > 1: each counted channel is a whole head)."""
        groups = self.groups
        if not groups:
            groups = next((b.widths["groups"] for b in self.budgets if "groups" in b.widths), [])
        return {
            g["id"]: g.get("channels", g.get("channels_before"))
            for g in groups
            if g.get("searchable") and g.get("unit", 1) > 1
        }

    def ratios(self, budget: Budget, uniform: bool = False) -> dict[int, float]:
        """Retained width ratio (channels after / before) per searchable group id: from
        widths.json, else from the search result's channels over analysis.json's."""
        source = budget.widths.get("uniform", {}) if uniform else budget.widths
        out = {
            g["id"]: g["channels_after"] / g["channels_before"]
            for g in source.get("groups", [])
            if g.get("searchable") and g.get("channels_before")
        }
        if out:
            return out
        width = (budget.result.get("uniform", {}) if uniform else budget.result).get("width", {})
        before = {g["id"]: g.get("channels") for g in self.groups}
        return {
            int(gid): w["channels"] / before[int(gid)]
            for gid, w in width.items()
            if before.get(int(gid)) and "channels" in w
        }

    def latency_misses(self) -> list[str]:
        """One sentence per budget whose slimmed model measured over its latency budget: its
        share of the original's (timed beside it) on the budget's scale (metrics.json
        `latency.measured_ms`; a run written before it: the ms measured)."""
        lines = []
        for b in self.budgets:
            limit, ms = b.latency_budget(), b.latency()
            measured = b.metrics.get("latency", {}).get("measured_ms") or ms.get("widthc")
            if limit is None or measured is None or measured <= limit:
                continue
            runtime = b.metrics.get("latency", {}).get("runtime", "onnxruntime-cpu")
            share = (
                f"{ms['widthc'] / ms['original']:.2f}x the original's, "
                if ms.get("widthc") and ms.get("original")
                else ""
            )
            predicted = b.predicted()
            lines.append(
                f"budget {b.text}: the slimmed model measured {share}{measured:.3g} ms on "
                f"{runtime}, {measured / limit - 1:.0%} over its {limit:.3g} ms budget"
                + (f" (predicted {predicted:.3g} ms)" if predicted is not None else "")
            )
        return lines

    @property
    def metric(self) -> str | None:
        """The name of the metric the run measured (metrics.json, search.json or the training
        log's validation records); None for a run written before metrics were named."""
        names = [b.metrics.get("metric") for b in self.budgets] + [self.search.get("metric")]
        names += [r.get("metric") for r in self.train_log]
        return next((n for n in names if n), None)

    @property
    def percent(self) -> bool:
        """Whether metric values read as percentages (top-1 accuracy, the default)."""
        return self.metric in (None, ACCURACY)

    def input_shape(self) -> tuple[int, ...] | None:
        """The input shape of the run (config.json's '1,3,32,32', else analysis.json's)."""
        shape = self.config.get("input_shape")
        if isinstance(shape, str):
            try:
                return tuple(int(s) for s in shape.replace("x", ",").split(","))
            except ValueError:
                return None
        if isinstance(shape, list | tuple):
            return tuple(int(s) for s in shape)
        shapes = self.analysis.get("input_shapes") or [None]
        return tuple(shapes[0]) if shapes[0] else None


def load(path: str | Path) -> RunData:
    """Read a run directory; only a missing directory is an error."""
    path = Path(path)
    if not path.is_dir():
        raise WidthcError(f"no run directory at {path}: pass the folder a `widthc slim` run wrote")
    problems: list[str] = []
    config = _json(path / CONFIG, problems)
    search = _json(path / SEARCH, problems)
    return RunData(
        path=path,
        config=config,
        analysis=_json(path / ANALYSIS, problems),
        search=search,
        stages=_json(path / STAGES_FILE, problems),
        train_log=_jsonl(path / TRAIN_LOG, problems),
        budgets=_budgets(path, config, search, problems),
        problems=problems,
        pretrained=_json(path / PRETRAINED, problems),
    )


def _budgets(path: Path, config: dict, search: dict, problems: list[str]) -> list[Budget]:
    """Budgets in the order the user gave them, then any other that left a result or folder."""
    results = {r["text"]: r for r in search.get("results", []) if "text" in r}
    folders: dict[str, Path] = {}
    files: dict[str, tuple[dict, dict]] = {}
    for folder in Run(path, {}).budget_dirs():
        widths = _json(folder / WIDTHS, problems)
        metrics = _json(folder / METRICS, problems)
        text = widths.get("budget", {}).get("text") or budget_text(folder.name)
        folders[text] = folder
        files[text] = (widths, metrics)
    texts = [*_given(config), *results, *folders]
    out = []
    for text in dict.fromkeys(texts):
        widths, metrics = files.get(text, ({}, {}))
        folder = folders.get(text) or path / budget_folder(text)
        out.append(Budget(text, folder, results.get(text, {}), widths, metrics))
    return out


def _given(config: dict) -> list[str]:
    """The labels of the budgets config.json gives, in order (none where it gives none)."""
    kinds = {}
    for kind in KINDS:
        texts = config.get(kind) or []
        kinds[kind] = texts.split(",") if isinstance(texts, str) else list(map(str, texts))
    try:
        return [budget_label(spec) for spec in budget_specs(**kinds)]
    except WidthcError:
        return []


def _json(path: Path, problems: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} could not be read ({e})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return {}
    return data


def _jsonl(path: Path, problems: list[str]) -> list[dict]:
    """One record per line; a torn last line (a killed run) is skipped, not fatal."""
    if not path.is_file():
        return []
    records, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
    if bad:
        problems.append(f"{path.name}: {bad} line(s) could not be read and were skipped")
    return records
