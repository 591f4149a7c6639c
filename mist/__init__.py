"""MIST estimator: command-line entry point and version (from the installed package metadata)."""

from importlib.metadata import version

__version__ = version("mist-estimator")
