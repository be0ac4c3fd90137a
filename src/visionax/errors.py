"""The one exception type meant for people: a bad config, name, path or batch size."""


class UserError(Exception):
    """A problem with the user's input, printed as one line (problem and fix); exit status 2."""
