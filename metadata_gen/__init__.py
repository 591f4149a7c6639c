"""Meta-dataset generator: joint distributions with known mutual information, reshaped by MI-preserving maps."""

from metadata_gen.config import ConfigError, MetaConfig, load_config, parse_config
from metadata_gen.sampler import Task, TaskStream, sample_task

__all__ = ["ConfigError", "MetaConfig", "Task", "TaskStream", "load_config", "parse_config", "sample_task"]
