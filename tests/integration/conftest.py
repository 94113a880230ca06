from tests.labfixtures import lab
from tests.switchfixtures import routed
from tests.syncfixtures import pair
from tests.trafficfixtures import hap
from tests.versionfixtures import pair_17, pair_18, pg17, pg18

__all__ = ["hap", "lab", "pair", "pair_17", "pair_18", "pg17", "pg18", "routed"]
