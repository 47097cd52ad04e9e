"""The searchers' registry: a searcher is registered by name (`@register("random")`)."""

from __future__ import annotations

from collections.abc import Callable

SEARCHERS: dict[str, Callable] = {}


def register(name: str):
    """Register a searcher: `fn(objective, rng, **options) -> list of proposed widths`."""

    def deco(fn):
        SEARCHERS[name] = fn
        return fn

    return deco
