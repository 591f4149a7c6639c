"""MIST estimator: command-line entry point and version."""

from model.package_version import package_version

__version__ = package_version()
