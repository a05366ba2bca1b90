"""The benchmark registry: exemplar sets in the ReVersion benchmark layout, their inference templates, and the
paper's relation data (its ten relations, phrases and entity lists, from ``data/reversion_benchmark.json``).

A benchmark folder holds one sub-folder per relation: images and ``text.json`` (see :mod:`reversion_core.exemplars`),
optionally ``relation.json`` (phrase, description, the set's shared nuisance) and ``templates.json`` (inference
templates ``"E_A <R> E_B"``). The app browses these sets, the evaluation learns and scores them, scripts train them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import ReVersionError, quoted
from .exemplars import MAX_IMAGE_SIDE, ExemplarSet, load_exemplars
from .settings import DEFAULT_PLACEHOLDER

DEFAULT_BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "assets" / "benchmark"
PAPER_BENCHMARK_FILE = Path(__file__).resolve().parent / "data" / "reversion_benchmark.json"


# ----------------------------------------------------------------------------------------------- exemplar sets
def list_benchmark_sets(benchmark_dir: str | os.PathLike) -> list[str]:
    """The exemplar sets under ``benchmark_dir``: every sub-folder holding a ``text.json`` (none when it is missing)."""
    root = Path(benchmark_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "text.json").is_file())


def load_benchmark_set(benchmark_dir: str | os.PathLike, name: str, max_side: int = MAX_IMAGE_SIDE) -> ExemplarSet:
    """One exemplar set of the benchmark, by folder name (a name that is not one of its sets is refused)."""
    if not name:
        raise ReVersionError("Choose an exemplar set of the benchmark.")
    if name not in list_benchmark_sets(benchmark_dir):
        raise ReVersionError(f"The benchmark has no exemplar set named {quoted(name)}.")
    return load_exemplars(Path(benchmark_dir) / name, max_side=max_side)


# ----------------------------------------------------------------------------------------------- the paper's relations
def paper_relations() -> dict[str, dict[str, Any]]:
    """The ten relations of the paper: phrase, description and entity lists."""
    return json.loads(PAPER_BENCHMARK_FILE.read_text(encoding="utf-8"))["relations"]


def paper_templates(name: str | None = None) -> dict[str, list[str]] | list[str]:
    """The ReVersion Benchmark's inference templates ("E_A <R> E_B"): all relations', or one relation's."""
    out = {r: [f"{a} {DEFAULT_PLACEHOLDER} {b}" for a in d["entities_a"] for b in d["entities_b"]] for r, d in paper_relations().items()}
    if name is None:
        return out
    if name not in out:
        raise ReVersionError(f"The ReVersion benchmark has no relation {name!r}; it has {', '.join(out)}.")
    return out[name]


# ----------------------------------------------------------------------------------------------- relations to evaluate
@dataclass
class BenchmarkRelation:
    """One relation to evaluate: its exemplar folder, phrase, inference templates and shared nuisance (world only)."""

    name: str
    folder: Path
    phrase: str | None
    templates: list[str]
    nuisance: dict | None = None


def load_benchmark(
    benchmark_dir: str | os.PathLike, names: Sequence[str] | None = None, templates_per_relation: int = 100,
) -> list[BenchmarkRelation]:
    """Read relation folders (exemplars + text.json), all of them unless ``names`` are given. Phrase and templates
    come from ``relation.json`` / ``templates.json`` beside them, else from the paper's data under the folder's name;
    each relation keeps its first ``templates_per_relation`` templates."""
    root = Path(benchmark_dir)
    if not root.is_dir():
        raise ReVersionError(f"Benchmark folder {root} does not exist.")
    available = list_benchmark_sets(root)
    names = list(names) if names else available
    paper = paper_relations()
    out = []
    for name in names:
        folder = root / name
        if name not in available:
            raise ReVersionError(f"Benchmark folder {root} has no relation {name!r} (it has: {', '.join(available) or 'none'}).")
        meta = json.loads((folder / "relation.json").read_text(encoding="utf-8")) if (folder / "relation.json").is_file() else {}
        phrase = meta.get("phrase") or paper.get(name, {}).get("phrase")
        if (folder / "templates.json").is_file():
            templates = json.loads((folder / "templates.json").read_text(encoding="utf-8"))
        elif name in paper:
            templates = paper_templates(name)
        else:
            raise ReVersionError(f"Relation {name!r} has no templates.json and is not one of the paper's relations; add inference templates.")
        templates = [" ".join(t.replace("{}", DEFAULT_PLACEHOLDER).split()) for t in templates][: int(templates_per_relation)]
        if any(t.count(DEFAULT_PLACEHOLDER) != 1 for t in templates):
            raise ReVersionError(f"Every inference template of {name!r} must contain {DEFAULT_PLACEHOLDER} once.")
        out.append(BenchmarkRelation(name, folder, phrase, templates, meta.get("nuisance")))
    return out


# ----------------------------------------------------------------------------------------------- templates
def split_template(template: str, placeholder: str = DEFAULT_PLACEHOLDER) -> tuple[str, str]:
    """``"red circle <R> blue square"`` (or ``{}`` in place of ``<R>``) -> ``("red circle", "blue square")``."""
    a, _, b = template.replace("{}", placeholder).partition(placeholder)
    return a.strip(), b.strip()


def with_articles(template: str) -> str:
    """``"red circle <R> blue square"`` -> ``"a red circle <R> a blue square"``."""

    def article(entity: str) -> str:
        return f"{'an' if entity[:1].lower() in 'aeiou' else 'a'} {entity}"

    a, b = split_template(template)
    return f"{article(a)} {DEFAULT_PLACEHOLDER} {article(b)}"
