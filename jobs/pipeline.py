"""The whole pipeline: extract → probe → (tune) → train → report, skipping finished stages.

    python jobs/pipeline.py [pipeline.tune=true] [storage=s3 storage.url=s3://...] [cluster=existing]
    ray job submit --working-dir . -- python jobs/pipeline.py data.limit=300
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import pipeline  # noqa: E402

main = hydra_entry(pipeline.run)

if __name__ == "__main__":
    main()
