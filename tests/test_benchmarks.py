"""The performance benchmarks' structure (never their timings): they run, report every figure, and the SD 1.5
stand-in has SD 1.5's shapes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "perf.py"), "--model", "tiny", "--device", "cpu", "--smoke",
         "--variants", "engine", "reference", "--gen-variants", "engine", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "cpu-tiny-smoke.json").read_text()), (out / "cpu-tiny-smoke.md").read_text()


def test_smoke_run_reports_each_training_variant_with_speed_memory_and_ratio(smoke):
    results, _ = smoke
    summary = results["training"]["summary"]
    assert set(summary) == {"engine", "reference"}
    for row in summary.values():
        assert row["s_per_step"] > 0 and row["samples_per_s"] > 0 and row["loop_peak_mib"] > 0
        assert row["paper_schedule_s"] == pytest.approx(3000 * row["s_per_step"])
        assert row["machine"]["torch"] and row["machine"]["cpu"]
    assert summary["reference"]["reference_over_this"] == pytest.approx(1.0)
    assert summary["engine"]["embedding_rows"] == summary["reference"]["embedding_rows"]


def test_smoke_run_times_an_inversion_end_to_end_and_generation_per_batch(smoke):
    results, _ = smoke
    e2e = results["training"]["end_to_end"]
    assert e2e["steps"] == 3 and e2e["steps_s"] > 0 and e2e["load_s"] >= 0
    batches = results["generation"]["variants"]["engine"]["batches"]
    assert set(batches) == {"1", "2"} and all(b["call_s"][0] > 0 for b in batches.values())
    work = results["training"]["work_per_micro_batch"]
    assert work["vae_encode"] > 0 and work["reference_over_engine_flops"] > 1


def test_markdown_names_the_machine_and_the_ratio(smoke):
    _, text = smoke
    assert text.count("Machine: ") == 2 and "torch 2." in text
    assert "| **engine** |" in text and "Ratio b/a" in text and "### Targets" in text


def test_sd15_configs_have_the_published_parameter_counts():
    from models import meta_components

    text_encoder, vae, unet = meta_components("sd15")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(text_encoder)) == (859_520_964, 83_653_863, 123_060_480)


def test_sd15_tokenizer_has_clips_vocabulary_size_and_one_token_words():
    from models import SD15_VOCAB_SIZE, _tokenizer, _vocabulary

    tokenizer = _tokenizer(_vocabulary(), 77, pad_to=SD15_VOCAB_SIZE)
    assert len(tokenizer) == 49408 and (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    assert len(tokenizer.encode("and", add_special_tokens=False)) == 1


def test_validation_benchmark_reports_both_variants_and_the_overhead(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_validation.py"), "--model", "tiny", "--steps", "2", "--validate-every", "1",
         "--in-process", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "validation-cpu-tiny.json").read_text())
    assert {"off", "on", "overhead_between_runs", "share_within_run"} <= set(results["summary"])
    assert results["on"]["validate_every"] == 1 and results["rounds"]["off"][0]["settings"]["validate_every"] == 0
    text = (tmp_path / "validation-cpu-tiny.md").read_text()
    assert "Machine: " in text and "| on |" in text and "Overhead of validation" in text


def test_app_load_quick_run_measures_every_case_and_judges_every_target(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "app_load.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = json.loads((tmp_path / "app_load-rule-quick.json").read_text())
    rule = results["modes"]["rule"]
    assert rule["env"] == {}  # the app as a user starts it: no thread variable, the rule chooses
    assert "torch thread" in rule["threads"] and "per operation" in rule["threads"]
    assert set(rule["cases"]) == {"idle", "neighbour", "two_visitors"}
    for figures in rule["cases"].values():
        assert all(figures[k] > 0 for k in ("generate_1_s", "generate_4_s", "report_card_s", "train_steps_per_s"))
        assert figures["train_end"].startswith("Stopped")
    assert rule["cases"]["neighbour"]["neighbour_core"] is not None
    judged = {(c["case"], c["figure"]) for c in rule["checks"]}
    assert judged == {(case, figure) for case in ("neighbour", "two_visitors")
                      for figure in ("generate_1_s", "generate_4_s", "report_card_s", "train_steps_per_s")}
    assert all(isinstance(c["pass"], bool) and c["ratio"] > 0 for c in rule["checks"])
    text = (tmp_path / "app_load-rule-quick.md").read_text()
    assert "| **rule** | idle |" in text and "| two visitors |" in text and "Quick run" in text
    assert text.count("PASS") + text.count("FAIL") == 8
