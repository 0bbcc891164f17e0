"""Errors the toolkit reports to operators: one clear message, no traceback.

Every exception an operator can see derives from EasyClusterError and is defined here, so
that one `except EasyClusterError` (tasks/_common.py operator_errors) turns any of them into
`error: <message>` and exit 1. Import them from here: the modules that raise them do not
re-export them (tests/test_layers.py). Nothing here reaches a host, or imports another module.
"""

from __future__ import annotations


class EasyClusterError(Exception):
    """A failure to report as `error: <message>` with a non-zero exit."""


class InventoryError(EasyClusterError):
    """The inventory file is invalid; every problem found is listed, not just the first."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  {self.path}: {p}" for p in problems)
        super().__init__(f"invalid inventory ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{lines}")


class RemoteError(EasyClusterError):
    """A command on a host failed (or the host could not be reached)."""

    def __init__(self, host: str, what: str, detail: str = ""):
        self.host, self.what, self.detail = host, what, detail
        super().__init__(f"{host}: {what}" + (f": {detail}" if detail else ""))


class RemoteOverdue(RemoteError):
    """A command on a host still running after its bound (the host answers: not cut off)."""


class JoinFailed(RemoteError):
    """The join did not complete. `answer` is the plugin's JSON if it gave one;
    `lost` means the host stopped answering over SSH."""

    def __init__(self, host: str, detail: str, answer: dict | None = None, lost: bool = False):
        super().__init__(host, "join failed", detail)
        self.answer, self.lost = answer or {}, lost

    @property
    def changed_nothing(self) -> bool:
        # the plugin touches Mnesia only after these checks pass
        return self.answer.get("failed_step") in ("wait_for_turn", "ping", "versions", "seed_running")


class StepFailed(EasyClusterError):
    """One step on one host failed (progress.Progress.step): names both, and the cause."""

    def __init__(self, host: str, step: str, cause: str):
        self.host, self.step, self.cause = host, step, cause
        super().__init__(f"[{host}] {step} failed: {cause}")


class PreflightFailed(EasyClusterError):
    """Preflight found problems (plan.Problem rows: host, check, detail, fix); nothing was changed."""

    def __init__(self, problems: list):
        self.problems = problems
        super().__init__(format_problems(problems))


def format_problems(problems: list) -> str:
    rows = [("host", "check", "problem", "what to do")] + [(p.host, p.check, p.detail, p.fix) for p in problems]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "preflight failed:\n" + "\n".join(lines)


class LockHeld(EasyClusterError):
    """Another run holds the cluster lock; says who, since when (`described`: the holder as
    lock.describe_holder words it), and how to break a dead one."""

    def __init__(self, host: str, holder: dict, described: str):
        self.host, self.holder = host, holder
        super().__init__(described + "\n  wait for it to finish; if that run is dead, "
                         "`fab break-lock` removes the lock")


class MembershipError(EasyClusterError):
    """A membership change (join, remove-node, forget-node, add-master) refused or failed."""


class SqlError(EasyClusterError):
    """The database could not be reached or refused us (the message says which, from where)."""
