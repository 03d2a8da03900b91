"""slotlab's own error types.

Every failure a user can cause (bad data, a bad checkpoint, a bad option) is raised as one of
these with one clear sentence naming the file and what is wrong; the CLI prints that sentence
and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class SlotlabError(Exception):
    """Base class of every error slotlab raises on purpose."""


class DataError(SlotlabError):
    """A dataset file or directory is missing, unreadable, corrupt or of the wrong layout."""


class CheckpointError(SlotlabError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the requested model."""


class ConfigError(SlotlabError):
    """An option, preset or run directory does not make sense."""
