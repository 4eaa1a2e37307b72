"""Test-split report: the prefill router beside the semantic baselines and references.

    python jobs/report.py
"""

import logging

import hydra
from omegaconf import DictConfig

from prefillray.stages import report


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    report.run(cfg)


if __name__ == "__main__":
    main()
