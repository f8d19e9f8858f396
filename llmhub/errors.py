"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class HubError(Exception):
    """Bad input or an impossible request; the message names the problem in one line."""
