"""The one exception type meant for people: a bad config, name, path or batch size."""


class UserError(Exception):
    """A problem with the user's input, printed as one line (problem and fix); exit status 2."""


def require_positive(config, keys) -> None:
    """A UserError naming the first of `keys` whose value in `config` is below 1 (counts and sizes)."""
    for key in keys:
        if config[key] < 1:
            raise UserError(f"{key}={config[key]} must be >= 1; set --config.{key} to a positive integer")
