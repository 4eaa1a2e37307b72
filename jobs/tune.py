"""Ray Tune sweep over Fisher-J-pre-screened layers and trunk hyperparameters.

    python jobs/tune.py [tune.num_samples=48] [tune.objective=val_gap_closed]
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from prefillray.stages import tune  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    tune.run(cfg)


if __name__ == "__main__":
    main()
