"""The port search, for real: bare connections the client closes first, against nginx on
a test namespace's loopback, faster than connect() can find free ports.

With ``tcp_tw_reuse`` at 2 a loopback TIME_WAIT port is reused after 1 s, so connect()
never fails with EADDRNOTAVAIL here; it walks the range past the ports still held
(KERNEL.md §B), and the generator falls behind.  The verdict must say so
(``ephemeral_ports``), not "give the generator more CPU" nor "SYNs unanswered".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.load.nginx_helper import running_nginx
from tests.load.runhelp import consistent, run_tcpchurn


@pytest.mark.root
def test_crowded_ports_are_the_finding_not_the_generator(
    tmp_path: Path, make_netns: Callable[[], str]
) -> None:
    ns = make_netns()
    with running_nginx(tmp_path, workers="2", netns=ns) as port:
        # 30,000/s for 6 s: the generator reached ~14,600/s here, 60% of the 28,232
        # ports to nginx held; a full dump every 2 s sees them
        done = run_tcpchurn(tmp_path / "run", f"127.0.0.1:{port}", "--mode", "tcp",
                            "--close", "client", "--rate", "30000", "--duration", "6",
                            "--timeout", "2", "--detail-every", "2", netns=ns)
    summary = done.summary
    consistent(summary, done.timeline)
    assert summary["errors"] == {}, summary["errors"]
    limits = [f["limit"] for f in summary["findings"]]
    assert limits[0] == "ephemeral_ports", summary["findings"]
    assert "generator_saturated" not in limits and "unreachable" not in limits
    finding = summary["findings"][0]
    assert "connect() searched the range for a free port" in finding["explanation"]
    assert finding["evidence"]["dest_sockets"] >= 0.5 * finding["evidence"]["port_range"]
    assert done.rc == 1
