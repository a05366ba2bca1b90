"""How the app holds up when the machine is not its own: what a visitor waits for when idle, with one core taken by
another process, and with two visitors at once (one training while the other generates and scores).

Each threads mode launches ``python app.py`` on the embedded model (CPU) once and drives it through gradio_client
as a page's clicks do (``/generate``, ``/score_relation``, ``/train``, ``/stop``), case after case:

- ``idle``: nothing else runs. Generate 1 image, then 4 (50 DDIM steps, the median of --rounds clicks each); the
  report card (16 pairs); a training alone for --train-s seconds once its steps have begun (previews and validation
  off, so that its rate counts steps only; then stopped). The relation generated with and scored is --relation, else
  one the app learns first in 10 steps (a card's work does not depend on how good the relation is).
- ``neighbour``: the same while ``python -c "while True: pass"`` keeps one core busy (pinned to the last core of
  this process's affinity; --no-pin lets the scheduler place it).
- ``two_visitors``: visitor A trains (the same settings) while visitor B generates 1 image, 4 images and the
  report card; A's steps/s over B's work; then A stops.

A training's steps/s come from its streamed status lines (step k at r steps/s since its start gives the server's
clock, k / r), between the first and the last line inside the window measured.

Threads modes: ``rule`` (the default): the app as a user starts it, no thread variable set, so
``reversion_core.cpu_threads`` chooses; ``default``: torch's own default before that rule, one thread per core
(REVERSION_THREADS and OMP_NUM_THREADS set to the core count); a number N: REVERSION_THREADS=N. Targets (issue 24,
the 2-core machine): in each loaded case generation and the report card take at most 2x their idle time and
training keeps at least 0.4x its idle steps/s; a mode's idle figures stay within 10% of ``default``'s (today's) when
both were measured in the run, or in the JSON that --baseline names.

    python benchmarks/app_load.py [--threads-mode rule default] [--rounds 2] [--out benchmarks/results] [--quick]

Writes ``app_load-<modes>.json`` (every figure) and ``.md`` (the tables) to --out, and prints the tables. ``--quick``
(5 DDIM steps, 2 pairs, 3 s of training, 1 round) only checks that everything runs: its figures mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable, Iterator

from app_startup import REPO, free_port, stop, wait_served
from common import fmt, load_average, machine, machine_line, markdown_table

CASES = ("idle", "neighbour", "two_visitors")
TIMES = ("generate_1_s", "generate_4_s", "report_card_s")  # seconds: lower is better
RATE = "train_steps_per_s"  # higher is better
LOADED_MAX = 2.0  # a loaded case's generation and report card: at most this many times their idle time
TRAIN_MIN = 0.4  # a loaded case's training: at least this share of its idle steps/s
IDLE_SLACK = 0.10  # a mode's idle figures against today's (the default mode's)
THREAD_VARIABLES = ("REVERSION_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
STATUS = re.compile(r"step (\d+) of \d+ · ([\d.]+) steps/s")
TRAIN_SET = "on_top_of"
RELATION = "load_relation"  # learned first when --relation names none
MAX_STEPS = 3000  # the app's most steps a run: a training that must outlast the other visitor's work is stopped


# ----------------------------------------------------------------------------------------------- the app
def mode_env(mode: str, cores: int) -> dict[str, str]:
    """The app's environment for a threads mode: none of the thread variables (``rule``), all at the core count
    (``default``: torch's one thread per core), or REVERSION_THREADS=N."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.pop("GRADIO_TEMP_DIR", None)
    if mode == "default":
        env["REVERSION_THREADS"] = env["OMP_NUM_THREADS"] = str(cores)
    elif mode != "rule":
        env["REVERSION_THREADS"] = str(int(mode))
    return env


@contextlib.contextmanager
def running_app(args: argparse.Namespace, env: dict[str, str], relations: Path, folder: Path) -> Iterator[tuple[str, Path]]:
    """The URL of ``python app.py`` serving ``relations`` with ``env``, and its log; stopped on leaving."""
    port = free_port()
    command = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--relations-dir", str(relations)]
    if args.base_model:
        command += ["--base-model", args.base_model]
    log = folder / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   env={**env, "REVERSION_TEMP_DIR": str(folder / "tmp"), "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_served(url, process, timeout=300)
        except SystemExit as exc:
            raise SystemExit(f"{exc}; its log ends: {' | '.join(log.read_text(errors='replace').splitlines()[-3:])}") from None
        yield url, log
    finally:
        stop(process)


def threads_line(log: Path) -> str:
    """The line the app logged at start about torch's threads."""
    for line in log.read_text(errors="replace").splitlines():
        if "torch thread" in line or "CPU threads" in line:
            return line.strip()
    return "(not logged)"


@contextlib.contextmanager
def neighbour(pin: bool) -> Iterator[int | None]:
    """Another process keeping one core busy (pinned to this process's last core unless ``pin`` is False)."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    core = max(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_setaffinity") else None
    if core is not None:
        os.sched_setaffinity(process.pid, {core})
    time.sleep(1.0)  # busy before the first click
    try:
        yield core
    finally:
        process.terminate()
        process.wait(20)


# ----------------------------------------------------------------------------------------------- clicks
def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def generate(client, relation: str, images: int, steps: int) -> None:
    client.predict(relation, "Entities", "red circle", "blue square", "", "", "", images, steps, 7.5, 0, api_name="/generate")


def score(client, relation: str, pairs: int) -> None:
    client.predict(relation, pairs, api_name="/score_relation")


class Training:
    """A visitor's training on the app, followed in a thread: each streamed status line as (client time, step, the
    server's seconds since the run's first step)."""

    def __init__(self, client, name: str, steps: int, train_set: str) -> None:
        self.client, self.samples, self.last = client, [], ""
        self.job = client.submit(set_name=train_set, name=name, steps=steps, preview_every=0, validate_every=0,
                                 overwrite=True, api_name="/train")
        self.thread = threading.Thread(target=self._follow, daemon=True, name=f"follow-{name}")
        self.thread.start()

    def _follow(self) -> None:
        for update in self.job:
            status = str(update[0] if isinstance(update, (list, tuple)) else update)
            self.last = status
            match = STATUS.search(status)
            if status.startswith("Training") and match and float(match[2]) > 0:
                step = int(match[1])
                self.samples.append((time.perf_counter(), step, step / float(match[2])))

    def wait_stepping(self, timeout: float = 900.0) -> None:
        """Until its steps have begun (the model copied, the exemplars encoded)."""
        deadline = time.perf_counter() + timeout
        while not self.samples:
            if not self.thread.is_alive() or time.perf_counter() > deadline:
                raise SystemExit(f"the training did not start stepping: {self.last[:300]!r}")
            time.sleep(0.2)

    def stop(self) -> str:
        self.client.predict(api_name="/stop")
        self.thread.join(300)
        return self.last

    def rate(self, start: float | None = None, end: float | None = None) -> float | None:
        """Steps/s between the first and the last status line inside [start, end] (client clock); with fewer than
        two inside, the nearest lines around the window."""
        samples = self.samples
        inside = [s for s in samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        if len(inside) < 2:
            before = [s for s in samples if start is not None and s[0] < start][-1:]
            after = [s for s in samples if end is not None and s[0] > end][:1]
            inside = before + inside + after
        if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def learn_relation(client, train_set: str, steps: int = 10) -> str:
    """A relation learned in a few steps (as good as any for timing: a card's work does not depend on its scores)."""
    status = client.predict(set_name=train_set, name=RELATION, steps=steps, preview_every=0, validate_every=0,
                            overwrite=True, api_name="/train")[0]
    if not status.startswith("Finished"):
        raise SystemExit(f"the relation to generate with was not learned: {status[:300]!r}")
    return RELATION


# ----------------------------------------------------------------------------------------------- the cases
def alone(a, b, args: argparse.Namespace, case: str) -> dict[str, Any]:
    """One visitor at a time: generation, the report card, then a training alone."""
    figures: dict[str, Any] = {
        "generate_1_s": median(timed(lambda: generate(b, args.relation, 1, args.gen_steps)) for _ in range(args.rounds)),
        "generate_4_s": median(timed(lambda: generate(b, args.relation, 4, args.gen_steps)) for _ in range(args.rounds)),
        "report_card_s": timed(lambda: score(b, args.relation, args.pairs)),
    }
    training = Training(a, f"load_{case}", MAX_STEPS, args.train_set)
    training.wait_stepping()
    time.sleep(args.train_s)
    figures["train_end"] = training.stop()[:120]
    figures[RATE], figures["train_status_lines"] = training.rate(), len(training.samples)
    figures["load_after"] = load_average()
    return figures


def together(a, b, args: argparse.Namespace) -> dict[str, Any]:
    """Visitor A trains while visitor B generates 1 image, 4 images and the report card."""
    training = Training(a, "load_two_visitors", MAX_STEPS, args.train_set)
    training.wait_stepping()
    start = time.perf_counter()
    figures: dict[str, Any] = {
        "generate_1_s": median(timed(lambda: generate(b, args.relation, 1, args.gen_steps)) for _ in range(args.rounds)),
        "generate_4_s": median(timed(lambda: generate(b, args.relation, 4, args.gen_steps)) for _ in range(args.rounds)),
        "report_card_s": timed(lambda: score(b, args.relation, args.pairs)),
    }
    end = time.perf_counter()
    figures["load_after"] = load_average()
    figures["train_end"] = training.stop()[:120]
    figures[RATE], figures["train_status_lines"] = training.rate(start, end), len(training.samples)
    return figures


def run_mode(args: argparse.Namespace, mode: str, cores: int) -> dict[str, Any]:
    """Launch the app in this threads mode and measure the three cases on it."""
    from gradio_client import Client

    env = mode_env(mode, cores)
    result: dict[str, Any] = {"env": {k: env[k] for k in THREAD_VARIABLES if k in env}, "load_before": load_average(),
                              "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        relations = Path(tmp) / "relations"
        relations.mkdir()
        if args.relation:
            shutil.copytree(Path(args.relations_dir) / args.relation, relations / args.relation)
        with running_app(args, env, relations, Path(tmp)) as (url, log):
            a, b = Client(url, verbose=False), Client(url, verbose=False)
            b.predict(api_name="/list_relations")  # answers once the base model has loaded
            result["threads"] = threads_line(log)
            # one learned on this base model unless named (the shipped ones may be of another base model)
            args = argparse.Namespace(**{**vars(args), "relation": args.relation or learn_relation(a, args.train_set)})
            result["relation"] = args.relation
            generate(b, args.relation, 1, 2)  # warm-up, not measured
            print(f"[{mode}] {result['threads']}", flush=True)
            for case in CASES:
                if case == "two_visitors":
                    figures = together(a, b, args)
                else:
                    with neighbour(args.pin) if case == "neighbour" else contextlib.nullcontext() as core:
                        figures = alone(a, b, args, case)
                        if case == "neighbour":
                            figures["neighbour_core"] = core
                result["cases"][case] = figures
                print(f"[{mode}] {case}: " + ", ".join(f"{k} {fmt(figures.get(k))}" for k in (*TIMES, RATE)), flush=True)
    result["checks"] = checks(result["cases"])
    return result


# ----------------------------------------------------------------------------------------------- targets and tables
def ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def checks(cases: dict[str, dict]) -> list[dict[str, Any]]:
    """Each loaded case's figures against its idle ones."""
    idle, out = cases["idle"], []
    for case in CASES[1:]:
        for figure in (*TIMES, RATE):
            r = ratio(cases[case].get(figure), idle.get(figure))
            target = f">= {TRAIN_MIN}x idle" if figure == RATE else f"<= {LOADED_MAX:g}x idle"
            ok = None if r is None else (r >= TRAIN_MIN if figure == RATE else r <= LOADED_MAX)
            out.append({"case": case, "figure": figure, "ratio": r, "target": target, "pass": ok})
    return out


def idle_checks(idle: dict[str, Any], today: dict[str, Any]) -> list[dict[str, Any]]:
    """A mode's idle figures against today's (the default mode's): times at most 10% longer, steps/s at most 10% fewer."""
    out = []
    for figure in (*TIMES, RATE):
        r = ratio(idle.get(figure), today.get(figure))
        target = f">= {1 - IDLE_SLACK:g}x today's" if figure == RATE else f"<= {1 + IDLE_SLACK:g}x today's"
        ok = None if r is None else (r >= 1 - IDLE_SLACK if figure == RATE else r <= 1 + IDLE_SLACK)
        out.append({"case": "idle", "figure": figure, "ratio": r, "target": target, "pass": ok})
    return out


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**FAIL**")


def tables(results: dict[str, Any]) -> str:
    """The figures of every mode and case (with their ratio to idle), then every target with PASS or FAIL."""
    rows, targets = [], []
    for mode, result in results["modes"].items():
        idle = result["cases"]["idle"]
        for case, f in result["cases"].items():
            cells = []
            for figure in (*TIMES, RATE):
                value = f.get(figure)
                shown = "-" if value is None else (f"{fmt(value)} steps/s" if figure == RATE else f"{fmt(value)} s")
                r = ratio(value, idle.get(figure)) if case != "idle" else None
                cells.append(shown + (f" ({r:.2f}x)" if r is not None else ""))
            rows.append([f"**{mode}**" if case == "idle" else "", case.replace("_", " "), *cells,
                         " ".join(f"{v:.2f}" for v in f["load_after"])])
        for c in result["checks"] + result.get("idle_vs_today", []):
            r = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
            targets.append([mode, c["case"].replace("_", " "), c["figure"], r, c["target"], verdict(c["pass"])])
    s = results["settings"]
    header = ["threads mode", "case", "generate 1 image", "generate 4 images", f"report card ({s['pairs']} pairs)",
              "training", "load average after (1/5/15 min)"]
    threads = "\n".join(
        f"- {mode}: {r['threads']} ({', '.join(f'{k}={v}' for k, v in r['env'].items()) or 'no thread variable set'})"
        for mode, r in results["modes"].items())
    card = f"`{s['relation']}`" if s["relation"] else "a relation learned in 10 steps"
    clicks = f"{s['rounds']} click{'s' if s['rounds'] != 1 else ''}"
    neighbour_at = "pinned to one core" if s["pin"] else "not pinned"
    return "\n\n".join([
        f"Command: `{results['command']}`",
        machine_line(results["machine"]),
        f"{s['gen_steps']} DDIM steps a generation (median of {clicks}), the report card of {card} once, training on "
        f"`{s['train_set']}` ({s['train_s']:g} s alone; beside the other visitor's work), the neighbour {neighbour_at}. "
        "Ratios are to the same mode's idle figure." + (" **Quick run: the figures mean nothing.**" if s["quick"] else ""),
        "Threads the app chose (its start-up log line):\n" + threads,
        markdown_table(header, rows),
        markdown_table(["threads mode", "case", "figure", "ratio", "target", "verdict"], targets),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads-mode", nargs="+", default=["rule"], metavar="MODE",
                   help="rule (what a user gets), default (torch's one thread per core) or a number of threads; "
                        "several run one after another")
    p.add_argument("--rounds", type=int, default=2, help="generation clicks per figure (their median)")
    p.add_argument("--gen-steps", type=int, default=50)
    p.add_argument("--pairs", type=int, default=16, help="entity pairs of the report card")
    p.add_argument("--train-s", type=float, default=20.0, help="seconds of training alone, once its steps have begun")
    p.add_argument("--relation", help="a relation under --relations-dir learned on the base model (default: one "
                                      "learned in 10 steps on --train-set when the app has started)")
    p.add_argument("--relations-dir", default=str(REPO / "relations"))
    p.add_argument("--train-set", default=TRAIN_SET, help="the benchmark set the training learns from")
    p.add_argument("--base-model", help="default: the app's (the embedded model on the CPU)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="let the scheduler place the busy neighbour")
    p.add_argument("--baseline", help="an earlier run's JSON whose default mode gives today's idle figures")
    p.add_argument("--quick", action="store_true", help="seconds, not minutes: only checks that everything runs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    for mode in args.threads_mode:
        if mode not in ("rule", "default") and not (mode.isdigit() and int(mode) >= 1):
            raise SystemExit(f"--threads-mode takes rule, default or a number of threads from 1 up, not {mode!r}.")
    if args.quick:
        args.rounds, args.gen_steps, args.pairs, args.train_s = 1, 5, 2, 3.0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    info = {**machine("cpu"), "torch_threads": "the app's"}
    settings = {k: getattr(args, k) for k in ("rounds", "gen_steps", "pairs", "train_s", "relation", "train_set", "pin", "quick")}
    results: dict[str, Any] = {"command": " ".join(["python benchmarks/app_load.py", *(argv if argv is not None else sys.argv[1:])]),
                               "machine": info, "settings": settings, "targets": {"loaded_max": LOADED_MAX,
                               "train_min": TRAIN_MIN, "idle_slack": IDLE_SLACK}, "modes": {}}
    for mode in dict.fromkeys(args.threads_mode):
        results["modes"][mode] = run_mode(args, mode, cores)
    today = results["modes"].get("default", {}).get("cases", {}).get("idle")
    if today is None and args.baseline:
        today = json.loads(Path(args.baseline).read_text()).get("modes", {}).get("default", {}).get("cases", {}).get("idle")
        if today is None:
            raise SystemExit(f"--baseline {args.baseline} has no idle figures of the default mode.")
    for mode, result in results["modes"].items():
        if today is not None and mode != "default":
            result["idle_vs_today"] = idle_checks(result["cases"]["idle"], today)

    text = tables(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "app_load-" + "-".join(results["modes"]) + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
