"""The one Hydra entry point every job in jobs/ wraps around its stage function."""

from __future__ import annotations

import logging
from typing import Any, Callable

import hydra
from omegaconf import DictConfig

from prefillray import PROJECT_ROOT
from prefillray.schema import validate_config


def hydra_entry(run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A ``main()`` that composes ``conf/`` with the command-line overrides, checks the
    types of the values (before any work starts) and runs ``run``."""

    @hydra.main(config_path=str(PROJECT_ROOT / "conf"), config_name="config", version_base=None)
    def main(cfg: DictConfig) -> None:
        logging.getLogger("prefillray").setLevel(logging.INFO)
        validate_config(cfg)
        run(cfg)

    return main
