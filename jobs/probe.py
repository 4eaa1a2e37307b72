"""Layer probes (Fisher J, cross-fitted J, held-out AUC, d_eff) over extracted shards.

    python jobs/probe.py [probe.shrinkage=0.1] [encoder=[smollm2,minilm]]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import probe  # noqa: E402

main = hydra_entry(probe.run)

if __name__ == "__main__":
    main()
