"""Extract prefill activations for the configured corpus and encoders (Hydra entry point).

    python jobs/extract.py [encoder=smollm2] [storage=s3 storage.url=s3://...] [data.limit=200]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import extract  # noqa: E402

main = hydra_entry(extract.run)

if __name__ == "__main__":
    main()
