"""The one exception the CLI turns into `error: <message>` and a non-zero exit."""


class CliError(Exception):
    """A failure the user can act on; its message is one line."""
