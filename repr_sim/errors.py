"""One exception for bad user input.

It subclasses ValueError so that library callers can catch the usual type; the CLI turns
it into a single line on stderr and exit code 2.
"""


class UserError(ValueError):
    """Bad input (a path, an option, a file): the message names the problem."""
