"""Meta-dataset generator: joint distributions with known mutual information, reshaped by MI-preserving maps.

The package root loads only the config schema (no torch): ``metadata_gen.sampler.sample_task`` is the reference
per-task path, ``metadata_gen.batched.BatchGenerator`` the batched one.
"""

from metadata_gen.config import ConfigError, MetaConfig, load_config, parse_config

__all__ = ["ConfigError", "MetaConfig", "load_config", "parse_config"]
