"""Errors the toolkit reports to operators: one clear message, no traceback."""


class EasyClusterError(Exception):
    """A failure to report as `error: <message>` with a non-zero exit."""


class LabError(EasyClusterError):
    """The lab cannot do what was asked (prerequisite missing, host unknown...)."""
