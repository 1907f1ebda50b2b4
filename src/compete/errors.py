"""The one error type a user can cause and fix; every module imports it from here."""


class PipelineError(Exception):
    """An error the user can fix: the message names the file, the row or id, and the fix."""
