"""Layer probes (Fisher J, cross-fitted J, held-out AUC, d_eff) over extracted shards.

    python jobs/probe.py [probe.shrinkage=0.1] [encoder=[smollm2,minilm]]
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from prefillray.stages import probe  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    probe.run(cfg)


if __name__ == "__main__":
    main()
