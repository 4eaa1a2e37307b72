"""Layer probes (Fisher J, cross-fitted J, held-out AUC, d_eff) over extracted shards.

    python jobs/probe.py [probe.shrinkage=0.1] [encoder=[smollm2,minilm]]
"""

import logging

import hydra
from omegaconf import DictConfig

from prefillray.stages import probe


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    probe.run(cfg)


if __name__ == "__main__":
    main()
