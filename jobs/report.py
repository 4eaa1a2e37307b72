"""Test-split report: the prefill router beside the semantic baselines and references.

    python jobs/report.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout (or the uploaded working dir)

from prefillray.entry import hydra_entry  # noqa: E402
from prefillray.stages import report  # noqa: E402

main = hydra_entry(report.run)

if __name__ == "__main__":
    main()
