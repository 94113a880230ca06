"""The repository stands alone: a user who clones it has every document it points to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked(*patterns: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    return [ROOT / n for n in names]


def test_every_relative_link_in_the_docs_resolves_inside_the_repository() -> None:
    docs = tracked("*.md")
    assert ROOT / "docs" / "design.md" in docs
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{doc.relative_to(ROOT)} points outside: {target}"
            assert path.exists(), f"{doc.relative_to(ROOT)} links a missing file: {target}"


def test_no_file_points_at_the_design_outside_the_repository() -> None:
    for path in tracked("*.md", "*.py", "*.toml", "*.sh", "Makefile", ".ci/*"):
        text = path.read_text(errors="replace")
        for outside in ("../shared", "DESIGN.md"):
            if path.name == "test_docs.py":
                continue
            assert outside not in text, f"{path.relative_to(ROOT)} mentions {outside}"
