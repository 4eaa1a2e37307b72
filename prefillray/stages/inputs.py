"""What every stage after extraction starts from: storage, the corpus, the extractions."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from prefillray.corpus import Corpus, load_corpus
from prefillray.encoders import EncoderSpec
from prefillray.extract import activations_dir
from prefillray.probing import ExtractionRef
from prefillray.runtime import encoder_specs, plain, storage_from_config
from prefillray.shards import MANIFEST
from prefillray.storage import Storage


class MissingStageOutput(RuntimeError):
    """An earlier stage's output is not in storage; the message says which job makes it."""


@dataclass
class StageInputs:
    storage: Storage
    corpus: Corpus
    specs: list[EncoderSpec]

    def extraction(self, spec: EncoderSpec) -> ExtractionRef:
        where = activations_dir(self.storage, spec, self.corpus.key)
        if not where.exists(MANIFEST):
            raise MissingStageOutput(
                f"no finished extraction for encoder {spec.name!r} at {where.uri()}; "
                f"run `python jobs/extract.py encoder={spec.name}` with the same data/storage overrides first"
            )
        return ExtractionRef.open(spec.name, where)


def stage_inputs(cfg: DictConfig) -> StageInputs:
    data_cfg = plain(cfg.data)
    return StageInputs(storage_from_config(cfg.storage), load_corpus(data_cfg, data_cfg.get("options")), encoder_specs(cfg.encoder))
