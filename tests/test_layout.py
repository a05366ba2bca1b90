"""The code's layout: the engine a library user imports stands alone, and every module reads in one sitting."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reversion_core", "server", "ui")


def test_the_engine_imports_no_gradio_no_spaces_and_no_server_state():
    script = (
        "import importlib, pkgutil, sys, reversion_core\n"
        "for m in pkgutil.walk_packages(reversion_core.__path__, 'reversion_core.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'gradio', 'spaces', 'server', 'ui', 'app'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"



def test_no_engine_module_imports_gradio_spaces_or_the_app_even_inside_a_function():
    import re

    pattern = re.compile(r"^\s*(?:import|from)\s+(gradio|spaces|server|ui|app)\b", re.M)
    found = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in sorted((ROOT / "reversion_core").rglob("*.py"))
             for m in pattern.finditer(p.read_text())]
    assert found == []


def modules():
    return [ROOT / "app.py", *(p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py")))]


def test_no_module_is_over_450_lines_and_one_over_400_says_why_in_its_opening_comment():
    for path in modules():
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{path.relative_to(ROOT)} has {lines} lines"
        if lines > 400:
            assert "over 400 lines" in (ast.get_docstring(ast.parse(path.read_text())) or "").lower(), path.relative_to(ROOT)
