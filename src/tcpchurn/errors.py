"""Every error tcpchurn raises, in one tree.

::

    TcpchurnError                      base; ``str(err)`` is one line for the user
    ├── UsageError          exit 2     *you* asked for something impossible: fix the command
    │   ├── BadValue                   an option or argument with a wrong value
    │   ├── NamespaceNotFound          --netns NAME / --pid PID that does not exist
    │   ├── NotPermitted               needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN)
    │   └── MissingTool                apache2, nginx, nft, ... not installed
    ├── TargetError         exit 3     *the world* did this: unreachable, garbage, hangs
    └── ParseError          exit 4     the kernel printed something we cannot read

Run-time limits that the kernel imposes (EADDRNOTAVAIL, EMFILE, ...) are *not* exceptions:
the load engine counts them by errno name and the diagnosis explains them.

Every message names the value that was wrong and what to do about it.
"""

from __future__ import annotations


class TcpchurnError(Exception):
    """Base of every error tcpchurn raises on purpose."""

    exit_code = 1


class UsageError(TcpchurnError):
    """The command asked for something that cannot be done: fix the command."""

    exit_code = 2


class BadValue(UsageError):
    """An option or argument has a wrong value.

    >>> str(BadValue("--rate", "-5", "give a positive number of connections per second"))
    "--rate: '-5' is not valid: give a positive number of connections per second"
    """

    def __init__(self, option: str, value: object, hint: str) -> None:
        self.option = option
        self.value = value
        self.hint = hint
        super().__init__(f"{option}: {value!r} is not valid: {hint}")

    def __reduce__(self) -> tuple[type[BadValue], tuple[str, object, str]]:
        return (type(self), (self.option, self.value, self.hint))


class NamespaceNotFound(UsageError):
    """A network namespace (by name) or a process (by pid) that does not exist."""


class NotPermitted(UsageError):
    """The operation needs privileges the caller does not have."""


class MissingTool(UsageError):
    """An external program the operation needs is not installed."""

    def __init__(self, tool: str, install: str) -> None:
        self.tool = tool
        self.install = install
        super().__init__(f"{tool} is not installed: run `{install}`")

    def __reduce__(self) -> tuple[type[MissingTool], tuple[str, str]]:
        return (type(self), (self.tool, self.install))


class TargetError(TcpchurnError):
    """The target did something that makes the run meaningless (unreachable, garbage)."""

    exit_code = 3


class ParseError(TcpchurnError):
    """A kernel file had a line we cannot parse.

    >>> str(ParseError("/proc/net/sockstat", 2, "TCP: inuse x"))
    "/proc/net/sockstat:2: cannot parse 'TCP: inuse x'"
    """

    exit_code = 4

    def __init__(self, path: str, lineno: int, line: str, why: str = "") -> None:
        self.path = path
        self.lineno = lineno
        self.line = line
        self.why = why
        msg = f"{path}:{lineno}: cannot parse {line!r}"
        super().__init__(f"{msg} ({why})" if why else msg)

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, int, str, str]]:
        return (type(self), (self.path, self.lineno, self.line, self.why))
