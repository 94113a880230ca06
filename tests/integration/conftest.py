from tests.labfixtures import lab
from tests.switchfixtures import routed
from tests.syncfixtures import pair
from tests.trafficfixtures import hap

__all__ = ["hap", "lab", "pair", "routed"]
