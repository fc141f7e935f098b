"""The project's error types for bad input: the entry scripts print them as one line."""


class UserError(Exception):
    """Bad input (a config value, a file, a folder): `error: <message>` and exit code 2.

    Anything else, a bug included, keeps its traceback.
    """
