"""Train the SharedTrunkNet router with Ray Train and save a pickle-free checkpoint.

    python jobs/train.py [train.features=probe|all|[smollm2:L18.mean]] [train.num_workers=2]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import train  # noqa: E402

main = hydra_entry(train.run)

if __name__ == "__main__":
    main()
