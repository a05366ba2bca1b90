"""How fast the app is ready: ``python app.py`` to the first page served, and the first generated image.

Each round launches ``app.py`` in a fresh process (on the embedded base model unless ``--base-model``), then
- ``startup_s``: launch until ``GET /`` answers 200 (the issue's budget: 15 s on the 2-core machine, otherwise idle);
- ``model_ready_s``: launch until the relation list answers (the Generate tab's dropdown fills once the base model
  has loaded in the background);
- ``first_image_s``: the first Generate click after that, with the app's default settings, until the images are
  back (budget: 5 s); ``second_image_s``: the same click again;
- ``launch_to_image_s``: launch until the first image when Generate is clicked the moment the page is served.

    python benchmarks/app_startup.py [--rounds 3] [--base-model FOLDER] [--json results/app_startup.json]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
STARTUP_BUDGET_S = 15.0
FIRST_IMAGE_BUDGET_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, relations_dir: Path, temp_dir: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    command = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--relations-dir", str(relations_dir)]
    if args.base_model:
        command += ["--base-model", args.base_model]
    env = {**os.environ, "REVERSION_TEMP_DIR": str(temp_dir)}
    env.pop("GRADIO_TEMP_DIR", None)  # set by importing app here; each launch gets its own
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}/", started


def wait_served(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise SystemExit(f"app.py did not serve {url} within {timeout} s")


def stop(process: subprocess.Popen, wait_s: float = 20.0) -> None:
    """End a launched app: terminate, and kill it if it has not exited within ``wait_s`` seconds."""
    process.terminate()
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()


def generate_args(relation: str | None) -> list:
    """The Generate tab's defaults (server.forms.GenerationRequest), on an example's entities."""
    from server.forms import GenerationRequest

    d = GenerationRequest()
    prompt = "" if relation else "red circle above blue square"
    mode = "Entities" if relation else "Free prompt"
    return [relation, mode, "red circle", "blue square", prompt, "", "", d.num_images, d.steps, d.guidance_scale, d.seed]


def first_relation(client) -> str | None:
    names = client.predict(api_name="/list_relations")
    return names[0] if names else None


def one_round(args: argparse.Namespace, relations_dir: Path) -> dict[str, float]:
    from gradio_client import Client

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # A: wait for the model, then click Generate (what a person sees after the relation list has filled).
        process, url, started = launch(args, relations_dir, Path(tmp) / "a")
        try:
            wait_served(url, process)
            result["startup_s"] = time.perf_counter() - started
            client = Client(url, verbose=False)
            relation = first_relation(client)
            result["model_ready_s"] = time.perf_counter() - started
            click = generate_args(relation)
            t = time.perf_counter()
            client.predict(*click, api_name="/generate")
            result["first_image_s"] = time.perf_counter() - t
            t = time.perf_counter()
            client.predict(*click, api_name="/generate")
            result["second_image_s"] = time.perf_counter() - t
        finally:
            stop(process)
        # B: click Generate the moment the page is served.
        process, url, started = launch(args, relations_dir, Path(tmp) / "b")
        try:
            wait_served(url, process)
            client = Client(url, verbose=False)
            client.predict(*click, api_name="/generate")
            result["launch_to_image_s"] = time.perf_counter() - started
        finally:
            stop(process)
    result["relation"] = relation or "(none: free prompt)"
    return result


def main(argv: list[str] | None = None) -> int:
    import app  # noqa: F401  (imported here, not while a timer runs: it imports gradio)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--base-model", help="default: the app's default (the embedded model)")
    p.add_argument("--relations-dir", default=str(REPO / "relations"))
    p.add_argument("--json", help="also write the rounds and medians here")
    args = p.parse_args(argv)

    rounds = []
    for k in range(args.rounds):
        rounds.append(one_round(args, Path(args.relations_dir)))
        print(f"round {k + 1}: " + ", ".join(f"{key} {v:.2f}" if isinstance(v, float) else f"{key} {v}" for key, v in rounds[-1].items()))
    keys = [k for k, v in rounds[0].items() if isinstance(v, float)]
    medians = {k: round(median(r[k] for r in rounds), 2) for k in keys}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    print(f"startup {medians['startup_s']:.2f} s (budget {STARTUP_BUDGET_S:.0f} s): "
          f"{'ok' if medians['startup_s'] <= STARTUP_BUDGET_S else 'OVER'}; first image {medians['first_image_s']:.2f} s "
          f"(budget {FIRST_IMAGE_BUDGET_S:.0f} s): {'ok' if medians['first_image_s'] <= FIRST_IMAGE_BUDGET_S else 'OVER'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rounds": rounds, "median": medians, "load": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
