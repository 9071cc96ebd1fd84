"""`edgecal report`: one self-contained HTML page and one PNG per tensor, to see a calibration.

From a state: each tensor's histogram (log scale) with every method's range marked,
the ``kl`` method's KL divergence over its candidate thresholds, and per method the
range, the share of values it clips, its expected SQNR and flags. From a table:
its ranges, stats and flags only (a table keeps no histogram). With a model and its
inputs, the accuracy check of ``edgecal check`` per table. Drawing needs the
``report`` extra (matplotlib).
"""

from .accuracy import Accuracy, checker
from .plots import HEIGHT, WIDTH
from .views import TensorView, expected_sqnr_db, state_tables, state_views, table_views
from .write import write_report

__all__ = [
           "HEIGHT",
           "WIDTH",
           "Accuracy",
           "TensorView",
           "checker",
           "expected_sqnr_db",
           "state_tables",
           "state_views",
           "table_views",
           "write_report",
]
