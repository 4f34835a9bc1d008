"""The ``tcpchurn`` command: a thin shell over the library (STYLE.md rule 11).

Each sub-command lives in its own module here (``cli/watch.py``, ``cli/run.py``, ...) and
only parses options into a config, calls the library and hands the result to a renderer.
Sub-commands are imported lazily, so ``tcpchurn --help`` does not pay for matplotlib.

Every error reaches the user as one line on stderr and an exit code (``errors.py``):

====  =====================================================================
code  meaning
====  =====================================================================
0     done; for ``run``: the rate held and nothing stopped or degraded it
1     ``run``: a finding stopped or degraded the run, a connection failed, or
      the generator fell behind; ``lab run``: the expected limit was not first
2     usage: a bad option or value, missing root, a missing tool
3     the target: unreachable, answers garbage, never answers
4     the kernel printed something tcpchurn cannot parse
130   interrupted (Ctrl-C / SIGTERM); what was measured is still written
====  =====================================================================
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from tcpchurn import __version__
from tcpchurn.errors import TcpchurnError
from tcpchurn.load.process import one_blas_thread

# name -> (module, attribute, one-line help shown by `tcpchurn --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("tcpchurn.cli.run", "run", "Sustain an exact rate of new TCP connections."),
    "serve": ("tcpchurn.cli.serve", "serve", "Run the built-in HTTP target server."),
    "watch": ("tcpchurn.cli.watch", "watch", "Watch every kernel table connection churn fills."),
    "doctor": ("tcpchurn.cli.doctor", "doctor", "Audit limits and forecast time to exhaustion."),
    "lab": ("tcpchurn.cli.lab", "lab", "Reproduce each failure in network namespaces."),
    "report": ("tcpchurn.cli.report", "report", "Render a run directory as one HTML file."),
    "compare": ("tcpchurn.cli.report", "compare", "Compare two runs side by side."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(COMMANDS[name][0]) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not self._available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tcpchurn")
def cli() -> None:
    """tcpchurn: an exact rate of new TCP connections, every kernel table it fills,
    and the limit that stopped the run.

    \b
    Start here:
      tcpchurn run                      1,000 conn/s for 10 s against a built-in server
      tcpchurn run http://web.example:8080/ --rate 5000 --duration 60
      tcpchurn watch                    the kernel tables, live
      tcpchurn doctor --rate 1000       which table fills first, and when
      sudo tcpchurn lab run seed-2009   the 2009 report, reproduced in namespaces
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turn every error into one line and an exit code."""
    if "numpy" not in sys.modules:  # BLAS reads its thread count when numpy loads it
        one_blas_thread(os.environ)
    try:
        rv: Any = cli.main(args=argv, prog_name="tcpchurn", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        print("tcpchurn: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        name = getattr(ctx, "info_name", None)
        where = f"tcpchurn {name}" if name and name != "tcpchurn" else "tcpchurn"
        print(f"{where}: error: {exc.format_message()} (see --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except TcpchurnError as exc:
        print(f"tcpchurn: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("tcpchurn: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
