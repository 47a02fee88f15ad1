"""UserError: a problem the user can fix (bad recipe, missing data, absent GPU).

Tools print its message on one line, without a traceback, and exit with status 2.
"""


class UserError(ValueError):
    """Raised with a message that names the bad thing and how to fix it."""
