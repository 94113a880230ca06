"""The e2e tests share the session's lab with the integration tests."""

from tests.labfixtures import lab

__all__ = ["lab"]
