from __future__ import annotations

from pathlib import Path

from config.reference import reference_markdown
from config.settings import Settings, secret_paths

DOC = Path(__file__).parents[2] / "docs" / "config.md"


def test_committed_reference_is_current() -> None:
    assert DOC.read_text() == reference_markdown(), "docs/config.md is stale: run `make docs`"


def test_reference_documents_every_section_and_marks_secrets() -> None:
    text = reference_markdown()
    for section in ("[blue.database]", "[[sync.transforms]]", "[switchover.pgbouncer]",
                    "[traffic.haproxy]", "[[slo]]", "[[hooks]]", "[state]", "[notify]"):
        assert f"`{section}`" in text
    for path in secret_paths(Settings):
        assert f"| `{path[-1]}` | secret |" in text
    assert "| `copy_jobs` | integer | `4` |" in text
    assert "| `max_lag_bytes` | size | `16MiB` |" in text
    assert "| `fence_timeout` | duration | `5s` |" in text
