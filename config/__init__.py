"""Cutover's configuration: settings models, loading and validation. Imports nothing of ours."""

from config.errors import ConfigError, Problem
from config.settings import Settings, load_settings, masked_dump

__all__ = ["ConfigError", "Problem", "Settings", "load_settings", "masked_dump"]
