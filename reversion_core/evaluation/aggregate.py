"""From scored images to tables: the per-seed rate over images, then mean and sample standard deviation over seeds,
per metric, method and relation (and their mean); and the result an evaluation returns."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .config import EvaluationConfig


@dataclass
class Cell:
    mean: float | None
    std: float | None
    per_seed: list[float | None]


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    records: list[dict]
    metrics: tuple[str, ...]
    relations: list[str]
    tables: dict[str, dict[str, dict[str, Cell]]]  # metric -> method -> relation (and "mean") -> cell
    chance: dict[str, float]
    training: list[dict]
    out_dir: Path
    elapsed_s: float = 0.0


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none (a metric that does not apply)."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def cell(per_seed: list[float | None]) -> Cell:
    """Mean and sample standard deviation over seeds (no spread from one seed)."""
    values = [v for v in per_seed if v is not None]
    if not values:
        return Cell(None, None, per_seed)
    average = sum(values) / len(values)
    std = math.sqrt(sum((v - average) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return Cell(average, std, per_seed)


def aggregate(records: Sequence[dict], metrics: Sequence[str], methods: Sequence[str], relations: Sequence[str], seeds: Sequence[int]):
    """metric -> method -> relation -> Cell: the per-seed rate over images, then mean and sample std over seeds.
    The "mean" column averages relations within each seed first, so its spread is the spread of seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["relation"], r["seed"]), []).append(r)
    tables = {}
    for metric in metrics:
        table = {}
        for method in methods:
            rate = {(rel, s): mean(r[metric] for r in groups.get((method, rel, s), [])) for rel in relations for s in seeds}
            row = {rel: cell([rate[rel, s] for s in seeds]) for rel in relations}
            row["mean"] = cell([mean(rate[rel, s] for rel in relations) for s in seeds])
            table[method] = row
        tables[metric] = table
    return tables
