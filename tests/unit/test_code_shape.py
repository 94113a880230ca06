"""The shape the codebase keeps (issue 20): small modules and short functions in the product
packages, so each holds one thing a reader can take in. Cyclomatic complexity (at most 15) is
ruff's C901, run by `make lint`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "sync", "controller")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
TEMPLATES = {("controller/lab/labconfig.py", "render_config")}
"""Data and templates aside: the lab's config file is one f-string, read as the file it writes."""


def _modules() -> list[Path]:
    found = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(found) > 100, "the product packages were not found"
    return found


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := p.read_text().count("\n")) > MAX_MODULE_LINES}
    assert long == {}, f"split these along their seams: {long}"


def test_no_function_is_over_50_lines() -> None:
    long = {}
    for path in _modules():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (rel, node.name) not in TEMPLATES:
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{rel}:{node.lineno} {node.name}"] = lines
    assert long == {}, f"shorten these: {long}"
