"""The one error type a user can cause and fix (config.py re-exports it)."""


class PipelineError(Exception):
    """An error the user can fix: the message names the file, the row or id, and the fix."""
