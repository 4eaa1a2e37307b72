"""Extract prefill activations for the configured corpus and encoders (Hydra entry point).

    python jobs/extract.py [encoder=smollm2] [storage=s3 storage.url=s3://...] [data.limit=200]
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from prefillray.stages import extract  # noqa: E402


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    logging.getLogger("prefillray").setLevel(logging.INFO)
    extract.run(cfg)


if __name__ == "__main__":
    main()
