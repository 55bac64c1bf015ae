"""The one base class for failures a user can act on.

Commands catch :class:`AlertclfError` and print its message as one line; anything else
is a bug and keeps its traceback.
"""


class AlertclfError(Exception):
    """A failure with a message that names the file, option or service at fault."""
