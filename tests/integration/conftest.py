from tests.labfixtures import lab

__all__ = ["lab"]
