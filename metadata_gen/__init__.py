"""Meta-dataset generator: joint distributions with known mutual information, reshaped by MI-preserving maps."""

from metadata_gen.batched import BatchGenerator, TaskBatch
from metadata_gen.config import ConfigError, MetaConfig, load_config, parse_config
from metadata_gen.sampler import Task, sample_task

__all__ = [
    "BatchGenerator",
    "ConfigError",
    "MetaConfig",
    "Task",
    "TaskBatch",
    "load_config",
    "parse_config",
    "sample_task",
]
