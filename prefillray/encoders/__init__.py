"""Encoders: spec, loading, and prefill feature extraction with prefix reuse."""

from prefillray.encoders.prefill import PrefillEncoder, PrefillStats
from prefillray.encoders.spec import EncoderConfigError, EncoderSpec, feature_name

__all__ = ["EncoderConfigError", "EncoderSpec", "PrefillEncoder", "PrefillStats", "feature_name"]
