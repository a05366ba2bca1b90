"""scripts/keep_best_report.py: the tables that say whether keeping the best validation step, or stopping early, helps."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("keep_best_report", ROOT / "scripts" / "keep_best_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_ranks_average_ties_and_spearman_reads_them():
    assert report.ranks([0.5, 0.25, 0.5, 1.0]) == [2.5, 1.0, 2.5, 4.0]
    assert report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert report.spearman([1, 1, 1], [1, 2, 3]) is None  # a constant side has no ranking


def write_folder(folder: Path, runs: dict) -> None:
    """``runs[(relation, seed)] = (curve values at 100.., {kind: (template accuracy, kept step)}, stopped_at)``."""
    lines = ["method,relation,seed,relation_accuracy"]
    for (relation, seed), (values, kept, stopped) in runs.items():
        name = f"{relation}-s{seed}"
        curve = [{"step": 100 * (k + 1), "relation": v, "seconds": 1.0} for k, v in enumerate(values)]
        summary = {"job": {"method": "reversion", "relation": relation, "seed": seed}, "elapsed_s": 70.0, "validation": {"curve": curve}}
        made_from = {"settings": {"validation_pairs": 8}}
        (folder / "training" / "reversion").mkdir(parents=True, exist_ok=True)
        (folder / "training" / "reversion" / f"{name}.json").write_text(json.dumps({"made_from": made_from, "summary": summary}))
        for kind, method in report.KINDS.items():
            accuracy, step = kept[kind]
            lines.append(f"{method},{relation},{seed},{accuracy}")
            card = {"validation": {"kept_step": step, **({"stopped_at": stopped} if kind == "early" else {})}}
            (folder / "relations" / method / name).mkdir(parents=True, exist_ok=True)
            (folder / "relations" / method / name / "card.json").write_text(json.dumps(card))
    (folder / "per_seed.csv").write_text("\n".join(lines) + "\n")


def test_the_report_pairs_each_training_with_itself(tmp_path):
    runs = {}
    for seed in (0, 1):
        # hugs: the best step (200) beats the last on the templates by 0.1; early stop at 500 keeps step 200 too
        runs[("hugs", seed)] = ((0.0, 0.5, 0.25, 0.25, 0.25, 0.25), {"last": (0.3, 600), "best": (0.4, 200), "early": (0.4, 200)}, 500)
        # inside: flat at 1.0 from step 100; best = 100 loses 0.2 against the last
        runs[("inside", seed)] = ((1.0,) * 6, {"last": (0.9, 600), "best": (0.7, 100), "early": (0.7, 100)}, 400)
    write_folder(tmp_path, runs)
    text = report.report(tmp_path)
    assert "4 trainings (2 relations x 2 seeds, 600 steps)" in text
    assert "| inside | 0.900 ± 0.000 | 0.700 ± 0.000 | 0.700 ± 0.000 | 100 / 100 | 400/100 / 400/100 |" in text
    assert "| held-out relations | +0.100 ± 0.000 | 2 / 0 / 0 | +0.100 ± 0.000 | 2 / 0 / 0 | +0.000 ± 0.000 |" in text
    assert "| all relations | -0.050 ± 0.000 | 2 / 0 / 2 |" in text
    # held-out: steps saved 100 of 600 each; named: 200 of 600
    assert "| all relations | 450 | 150 of 600 (25%) | 1.2 of 4.7 min |" in text
    # 6 validations of 1 s in each of 4 trainings of 70 s: 24 s against the other 256 s
    assert "Validation (6 points of 8 pairs per training) took 0.4 of the 4.7 training minutes, 9.4% of the rest" in text


def test_a_folder_without_the_three_kept_rules_is_refused_in_one_sentence(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"{tmp_path} is not a finished evaluation with reversion, reversion@best and reversion@early")
