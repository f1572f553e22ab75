"""User-facing errors: one line naming the problem and the fix, no traceback."""


class UserError(Exception):
    """Bad input (file, shape, dtype, value, config). `main` prints `str(e)` and exits with code 2."""
