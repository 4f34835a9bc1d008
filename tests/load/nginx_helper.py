"""Start a real nginx on loopback from a generated config (for the engine's tests).

``nginx -c CONF -p PREFIX -g 'daemon off;'`` with every pid, log and temp file under a
temporary directory; stopped (and waited for) on exit.  Nothing is left behind.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CONF = """\
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 65536; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  keepalive_timeout 65;
  server {{
    listen {host}:{port} backlog=4096 reuseport;
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A free port *below* the ephemeral range (32768-60999 by default).

    Below it, ``sport = :P`` in an ss filter matches only the server's sockets, never a
    client socket left in TIME_WAIT by an earlier test that happened to get port P.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        if not _time_wait_on(port):
            return port
    raise RuntimeError("no free port in 20000-32000")


#: connect, then close with RST: a probe must not leave a TIME_WAIT of its own
PROBE = """
import socket, struct, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))
"""


def _answers(host: str, port: int, inside: list[str]) -> bool:
    """Whether ``host:port`` accepts a connection (in a namespace: through ``inside``)."""
    if inside:
        return subprocess.run([*inside, sys.executable, "-c", PROBE, host, str(port)],
                              capture_output=True).returncode == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return s.connect_ex((host, port)) == 0


def _time_wait_on(port: int) -> bool:
    out = subprocess.run(["ss", "-Htan", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return bool(out.strip())


@contextlib.contextmanager
def running_nginx(tmp: Path, workers: str = "1", host: str = "127.0.0.1",
                  netns: str | None = None) -> Iterator[int]:
    """Yield the port of an nginx serving ``200 ok`` on ``host`` (in network namespace
    ``netns``, on port 80 there); stop it afterwards."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port(host) if netns is None else 80  # a test's fresh namespace is empty
    conf = prefix / "nginx.conf"
    conf.write_text(CONF.format(workers=workers, prefix=prefix, host=host, port=port))
    inside = ["ip", "netns", "exec", netns] if netns is not None else []
    proc = subprocess.Popen(
        [*inside, "nginx", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if _answers(host, port, inside):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx did not start: {err}")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()  # SIGTERM: fast shutdown of master and workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
