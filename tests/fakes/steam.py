"""The tests' name of the Steam simulator's `wallwhale_simulator.steam`: the same module object, so
a test that changes one of its attributes changes it for the simulator too."""

import sys

from wallwhale_simulator import steam

sys.modules[__name__] = steam
