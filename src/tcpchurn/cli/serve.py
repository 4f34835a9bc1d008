"""``tcpchurn serve``: the built-in target server, with the knobs that reproduce each
server-side limit.  A thin shell over :mod:`tcpchurn.server`."""

from __future__ import annotations

import sys

import click

from tcpchurn.server import ServerConfig
from tcpchurn.server import serve as run_server


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="IP address to listen on (:: or 0.0.0.0 for every address).")
@click.option("--port", default=8080, show_default=True, type=int,
              help="TCP port; 0 picks a free one (printed at start).")
@click.option("--close", type=click.Choice(["server", "client"]), default="server",
              show_default=True,
              help="server: close after each response, so the SERVER holds TIME_WAIT "
                   "(Apache answering ab in the 2009 report). client: keep the connection "
                   "until the client closes, so the CLIENT holds TIME_WAIT and runs out of "
                   "ephemeral ports.")
@click.option("--backlog", default=4096, show_default=True, type=int,
              help="listen() backlog: the accept-queue size (capped by "
                   "net.core.somaxconn). Small values plus --accept-delay reproduce "
                   "accept-queue overflows (ListenOverflows, ListenDrops).")
@click.option("--accept-delay", "accept_delay_ms", default=0.0, show_default=True,
              type=float, metavar="MS",
              help="sleep MS milliseconds between accept() calls: a slow server whose "
                   "accept queue fills (with a small --backlog).")
@click.option("--response-bytes", default=2, show_default=True, type=int, metavar="N",
              help="body size of every 200 response; large bodies make clients that close "
                   "without reading send RST (TCPAbortOnClose).")
def serve(host: str, port: int, close: str, backlog: int, accept_delay_ms: float,
          response_bytes: int) -> None:
    """Run the built-in HTTP/1.x server: 200 and N bytes for any method and path.

    \b
    Examples:
      tcpchurn serve --port 8080                      server closes first
      tcpchurn serve --close client                   the client will hold TIME_WAIT
      tcpchurn serve --backlog 8 --accept-delay 10    accept queue overflows at ~100/s

    Bare TCP clients that send nothing are closed after 200 ms (--close server) or when
    they close (--close client).  Stop with Ctrl-C.
    """
    cfg = ServerConfig(host=host, port=port, close=close,  # type: ignore[arg-type]
                       backlog=backlog, accept_delay_ms=accept_delay_ms,
                       response_bytes=response_bytes).validate()

    def ready(real_port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"tcpchurn serve: listening on http://{shown}:{real_port}/ "
                   f"(close={close}, backlog={backlog}, accept-delay={accept_delay_ms:g} ms, "
                   f"{response_bytes} bytes per response)", file=sys.stderr)

    run_server(cfg, ready)
