from tests.labfixtures import lab
from tests.syncfixtures import pair

__all__ = ["lab", "pair"]
