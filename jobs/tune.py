"""Ray Tune sweep over Fisher-J-pre-screened layers and trunk hyperparameters.

    python jobs/tune.py [tune.num_samples=48] [tune.objective=val_gap_closed]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import tune  # noqa: E402

main = hydra_entry(tune.run)

if __name__ == "__main__":
    main()
