"""Extract prefill activations for the configured corpus and encoders (Hydra entry point).

    python jobs/extract.py [encoder=smollm2] [storage=s3 storage.url=s3://...] [data.limit=200]
"""

import logging

import hydra
from omegaconf import DictConfig

from prefillray.stages import extract


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    extract.run(cfg)


if __name__ == "__main__":
    main()
