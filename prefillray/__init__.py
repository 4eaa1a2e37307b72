"""prefillray: route each query to the LLM most likely to answer it, from an encoder's prefill
activations, with the heavy parts on Ray."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ${prefillray.root:} in conf/ points at the checkout, so shipped data resolves wherever the
# job runs from (a local clone or a `ray job submit --working-dir` upload).
if not OmegaConf.has_resolver("prefillray.root"):
    OmegaConf.register_new_resolver("prefillray.root", lambda: str(PROJECT_ROOT))
