"""Train the SharedTrunkNet router with Ray Train and save a pickle-free checkpoint.

    python jobs/train.py [train.features=probe|all|[smollm2:L18.mean]] [train.num_workers=2]
"""

import logging

import hydra
from omegaconf import DictConfig

from prefillray.stages import train


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    train.run(cfg)


if __name__ == "__main__":
    main()
