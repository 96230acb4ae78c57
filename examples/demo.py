"""`make demo`: the whole story on the embedded defaults, in one command (the work is examples/radio_antijam.py).

Train an AntiJam-v0 teacher -> distill and quantize it to int8 -> export a signed bundle and verify it as a device
would -> start the embedded MQTT broker, the fleet monitor, the daemon adapting online and the C radio simulator on
a pty -> the jammer switches from sweeping to reactive mid-run: success drops, promotions follow, success recovers
-> a summary table from the monitor's recording and runs/demo/antijam.png.

    python examples/demo.py              # about 75 s on 2 cores after the install
    python examples/demo.py --seed 1     # every option of examples/radio_antijam.py works here (--help)

The drone and the robot have their own scripts: examples/drone_hover.py, examples/robot_linefollow.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radio_antijam import main

if __name__ == "__main__":
    raise SystemExit(main())
