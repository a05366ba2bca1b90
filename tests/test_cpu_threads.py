"""torch's threads on the CPU: the rule (cores and operations), the variables that choose instead, a bad value refused in
one sentence, and the CLI and the app applying it at start."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reversion_core.cpu_threads import (
    APP_OPERATIONS, CLI_OPERATIONS, ThreadChoice, available_cores, choose_threads, chosen_threads, cpu_quota,
    threads_per_operation,
)
from reversion_core.errors import ReVersionError

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("REVERSION_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
APPLIED = ("import sys, torch\nfrom reversion_core.cli import main\ncode = main(sys.argv[1:])\n"
           "print('THREADS', torch.get_num_threads(), torch.get_num_interop_threads(), code)\n")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any thread variable (the test session sets one), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}, **extra}


# ----------------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("cores, operations, threads", [
    (1, 1, 1), (1, 2, 1),  # one core: one thread, whatever runs
    (2, 1, 1), (2, 2, 1),  # this project's machine: a busy neighbour must not share a core with a torch thread
    (3, 2, 1), (4, 1, 3), (4, 2, 1), (5, 2, 2),
    (8, 1, 7), (8, 2, 3), (16, 2, 7), (64, 1, 63),
])
def test_threads_per_operation_keep_one_core_free_and_share_the_rest(cores, operations, threads):
    assert threads_per_operation(cores, operations) == threads


def test_the_choice_says_why_in_one_line():
    app = choose_threads(APP_OPERATIONS, "cpu", env={}, cores=2)
    assert app == ThreadChoice(1, "1 torch thread per operation: 2 cores, up to 2 operations at once, one core kept free", "rule")
    cli = choose_threads(CLI_OPERATIONS, "cpu", env={}, cores=8)
    assert cli == ThreadChoice(7, "7 torch threads per operation: 8 cores, 1 operation at a time, one core kept free", "rule")
    assert choose_threads(APP_OPERATIONS, "cpu", env={}, cores=1).reason == "1 torch thread per operation: 1 core"


def test_on_a_gpu_torchs_default_is_left_alone():
    choice = choose_threads(APP_OPERATIONS, "cuda", env={}, cores=16)
    assert choice.threads is None and choice.source == "gpu" and "GPU" in choice.reason


# ----------------------------------------------------------------------------------------------- the machine
def test_cores_are_the_affinity_cut_to_the_cpu_quota():
    assert available_cores(affinity=4, quota=1.5) == 1
    assert available_cores(affinity=2, quota=8.0) == 2
    assert available_cores(affinity=4, quota=0.2) == 1  # never none
    assert available_cores(quota=1000.0) == len(os.sched_getaffinity(0))


def test_the_cpu_quota_is_read_from_cgroup_v2_or_v1(tmp_path):
    assert cpu_quota(tmp_path) is None  # nothing to read: no quota
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1) is None


# ----------------------------------------------------------------------------------------------- the variables
def test_reversion_threads_wins_over_openmp_and_over_the_device():
    env = {"REVERSION_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert choose_threads(APP_OPERATIONS, "cpu", env=env, cores=2) == ThreadChoice(
        3, "3 torch threads per operation: REVERSION_THREADS=3", "REVERSION_THREADS")
    assert choose_threads(APP_OPERATIONS, "cuda", env=env).threads == 3


@pytest.mark.parametrize("value, threads", [("4", 4), ("4,2", 4), (" 2 ", 2), ("abc", None), ("0", None), ("", None)])
def test_openmp_threads_are_used_when_they_are_a_number_openmp_reads(value, threads):
    choice = choose_threads(CLI_OPERATIONS, "cpu", env={"OMP_NUM_THREADS": value}, cores=16)
    assert choice.threads == (threads or 15)
    assert choice.source == ("OMP_NUM_THREADS" if threads else "rule")


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2 threads"])
def test_a_bad_reversion_threads_is_refused_in_one_sentence(value):
    with pytest.raises(ReVersionError) as info:
        chosen_threads({"REVERSION_THREADS": value})
    assert str(info.value) == f"REVERSION_THREADS must be a whole number of threads from 1 up, not {value!r}."


def test_an_empty_reversion_threads_is_unset():
    assert chosen_threads({"REVERSION_THREADS": " "}) is None


# ----------------------------------------------------------------------------------------------- applied at start
def run_cli(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A cheap real command (render one scene) through the CLI's main, then torch's threads in that process."""
    command = ["world", "render", "--relation", "above", "--entity-a", "red circle", "--entity-b", "blue square",
               "--size", "16", "--out", str(tmp_path / "scene.png")]
    return subprocess.run([sys.executable, "-c", APPLIED, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_cli_sets_the_rules_threads_and_one_inter_op_thread(tmp_path):
    done = run_cli(tmp_path, clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    expected = choose_threads(CLI_OPERATIONS, "cpu", env={}).threads
    assert done.stdout.splitlines()[-1] == f"THREADS {expected} 1 0"


def test_the_cli_sets_the_threads_reversion_threads_chooses(tmp_path):
    done = run_cli(tmp_path, clean_env(REVERSION_THREADS="3", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "THREADS 3 1 0"


def test_the_cli_refuses_a_bad_reversion_threads_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "reversion_core", "world", "render", "--relation", "above", "--entity-a",
                           "red circle", "--entity-b", "blue square", "--out", str(tmp_path / "x.png")],
                          cwd=ROOT, env=clean_env(REVERSION_THREADS="many"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: REVERSION_THREADS must be a whole number of threads from 1 up, not 'many'."
    assert not (tmp_path / "x.png").exists()


def start_app(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--relations-dir", str(tmp_path / "relations")],
        cwd=ROOT, env={**env, "REVERSION_TEMP_DIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_the_app_logs_the_threads_it_chose_for_two_operations_at_start(tmp_path):
    process = start_app(tmp_path, clean_env(REVERSION_DEVICE="cpu"))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            lines.append(line.strip())
            if "per operation" in line:
                break
    finally:
        process.terminate()
        process.wait(30)
    expected = choose_threads(APP_OPERATIONS, "cpu", env={}).reason
    assert expected in lines, lines[-10:]
    assert lines.index(expected) == next(i for i, l in enumerate(lines) if l.startswith("running ")) + 1


@pytest.mark.slow
def test_the_app_refuses_a_bad_reversion_threads_at_start_in_one_sentence(tmp_path):
    process = start_app(tmp_path, clean_env(REVERSION_THREADS="0"))
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 1
    assert output.strip().splitlines()[-1] == "REVERSION_THREADS must be a whole number of threads from 1 up, not '0'."
