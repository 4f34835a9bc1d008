"""sock_diag against the real kernel, compared with `ss` in the same namespace."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from tcpchurn.kernel import sockdiag
from tcpchurn.kernel.procfs import Procfs
from tests.conftest import sh
from tests.kernel.sockdiag_scene import (
    Scene,
    build_scene,
    many_time_wait,
    ss_lines,
    ss_listeners,
    ss_states,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def scene_ns() -> Iterator[tuple[str, Procfs, Scene]]:
    """One namespace holding the scene for every test of this module (built once)."""
    name = f"tcpchurn-t-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        with Procfs(netns=name) as procfs:
            scene = build_scene(procfs)
            try:
                yield name, procfs, scene
            finally:
                scene.close()
    finally:
        sh("ip", "netns", "del", name, check=False)


def _nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def test_state_counts_equal_ss(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, _ = scene_ns
    before = (ss_states(ns, "-4"), ss_states(ns, "-6"))
    ours = sockdiag.tcp_states(procfs)
    after = (ss_states(ns, "-4"), ss_states(ns, "-6"))
    assert before == after, "the scene was not frozen"
    assert _nonzero(ours.by_family[4]) == before[0]
    assert _nonzero(ours.by_family[6]) == before[1]
    assert ours.total == {
        k: ours.by_family[4][k] + ours.by_family[6][k] for k in sockdiag.STATE_NAMES
    }
    assert list(ours.total) == list(sockdiag.STATE_NAMES)


def test_scene_is_what_was_built(scene_ns: tuple[str, Procfs, Scene]) -> None:
    _, procfs, scene = scene_ns
    ours = sockdiag.tcp_states(procfs)
    assert ours.by_family[4]["TIME_WAIT"] == scene.tw_v4
    assert ours.by_family[6]["TIME_WAIT"] == scene.tw_mapped + scene.tw_v6
    assert ours.total["FIN_WAIT2"] == scene.fin_wait2  # timewait socks, substate FIN_WAIT2
    assert ours.total["CLOSE_WAIT"] == scene.fin_wait2


def test_tw_v4mapped_equals_tcp6_mapped_time_wait(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, scene = scene_ns
    tw6 = ss_lines(ns, "-6", "state", "time-wait")
    mapped = [f for f in tw6 if f[2].startswith("[::ffff:")]  # -H state filter drops State
    ours = sockdiag.tcp_states(procfs)
    assert ours.tw_v4mapped == len(mapped) == scene.tw_mapped
    assert ours.by_family[6]["TIME_WAIT"] == len(tw6)


def test_state_filter_is_applied_in_the_kernel(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, _ = scene_ns
    only_tw = sockdiag.tcp_states(procfs, ["TIME_WAIT"])
    assert _nonzero(only_tw.total) == {"TIME_WAIT": len(ss_lines(ns, "state", "time-wait"))}
    assert only_tw.tw_v4mapped == sockdiag.tcp_states(procfs).tw_v4mapped
    assert sockdiag.tcp_states(procfs, ["LISTEN"]).tw_v4mapped == 0


def test_listen_queue_and_backlog_equal_ss(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, scene = scene_ns
    theirs = ss_listeners(ns)
    ours = sockdiag.listeners(procfs)
    assert {(x.local, x.queue, x.backlog) for x in ours} == theirs
    full = next(x for x in ours if x.local == f"127.0.0.1:{scene.full_port}")
    # sk_acceptq_is_full() is ack_backlog > max_ack_backlog: listen(8) holds 9.
    assert (full.queue, full.backlog, full.family) == (9, 8, 4)
    dual = next(x for x in ours if x.local == f"[::]:{scene.dual_port}")
    assert dual.family == 6


def test_destinations_equal_ss_dst_counts(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, scene = scene_ns
    ours = sockdiag.destinations(procfs, top=3)
    assert [d.remote for d in ours[:2]] == [
        f"127.0.0.1:{scene.full_port}",  # 20 clients of the full queue
        f"127.0.0.3:{scene.est_port}",  # 12 + 3 v4-mapped + 3 CLOSE_WAIT
    ]
    for d in ours:
        theirs = ss_states(ns, "dst", d.remote)
        assert d.states == theirs, d.remote
        assert d.sockets == sum(theirs.values())
    est = ours[1]
    assert est.sockets == scene.est_v4 + scene.est_mapped + scene.fin_wait2


def test_destinations_filter_by_state(scene_ns: tuple[str, Procfs, Scene]) -> None:
    ns, procfs, scene = scene_ns
    ours = sockdiag.destinations(procfs, top=50, states=["CLOSE_WAIT"])
    assert [(d.remote, d.states) for d in ours] == [
        (f"127.0.0.3:{scene.est_port}", {"CLOSE_WAIT": scene.fin_wait2})
    ]
    theirs = ss_lines(ns, "state", "close-wait", "dst", f"127.0.0.3:{scene.est_port}")
    assert len(theirs) == ours[0].sockets


def test_destinations_leave_out_a_listener_s_own_connections(
    scene_ns: tuple[str, Procfs, Scene],
) -> None:
    ns, procfs, scene = scene_ns
    skip = sockdiag.listener_ports(sockdiag.listeners(procfs))
    assert {scene.full_port, scene.est_port} <= skip
    ours = sockdiag.destinations(procfs, top=100_000, skip_local_ports=skip)
    # ss: every socket but the listeners, whose local port is not a listener's
    theirs = [f for f in ss_lines(ns, "-a") if f[0] != "LISTEN"
              and int(f[3].rsplit(":", 1)[1]) not in skip]
    assert sum(d.sockets for d in ours) == len(theirs) > 0
    every = sockdiag.destinations(procfs, top=100_000)
    assert sum(d.sockets for d in every) > len(theirs)  # the server's side was there
    # the one-walk variant a full sample uses leaves out the same sockets
    assert sockdiag.states_and_destinations(procfs, top=100_000, skip_local_ports=skip)[1] \
        == ours
    # what a client holds is unchanged: the busiest remotes are the same
    assert [(d.remote, d.states) for d in ours[:2]] == [(d.remote, d.states)
                                                         for d in every[:2]]


def test_socket_is_reused_and_survives_many_dumps(scene_ns: tuple[str, Procfs, Scene]) -> None:
    _, procfs, _ = scene_ns
    first = sockdiag.listeners(procfs)
    for _ in range(50):
        assert sockdiag.listeners(procfs) == first


def test_host_namespace_does_not_see_the_scene(
    scene_ns: tuple[str, Procfs, Scene], make_netns: Callable[[], str]
) -> None:
    with Procfs(netns=make_netns()) as empty:
        assert sockdiag.listeners(empty) == []
        assert sum(sockdiag.tcp_states(empty).total.values()) == 0


def test_empty_state_set_sends_no_dump(scene_ns: tuple[str, Procfs, Scene]) -> None:
    _, procfs, _ = scene_ns
    assert sum(sockdiag.tcp_states(procfs, []).total.values()) == 0
    assert sockdiag.destinations(procfs, states=["LISTEN"]) == []
    assert sockdiag.listeners(procfs)  # the socket still answers afterwards


def test_request_sockets_count_as_syn_recv_like_ss(make_netns: Callable[[], str]) -> None:
    """A dropped final ACK leaves a request socket (TCP_NEW_SYN_RECV) on the server;
    inet_diag reports it as SYN_RECV (inet_req_diag_fill), and so does ss."""
    ns = make_netns()
    with Procfs(netns=ns) as procfs:
        lst = procfs.call(lambda: socket.socket())
        clients = [procfs.call(lambda: socket.socket()) for _ in range(5)]
        try:
            lst.bind(("127.0.0.1", 0))
            lst.listen(16)
            port = lst.getsockname()[1]
            sh("nft", "add table inet t", netns=ns)
            sh("nft", "add chain inet t o { type filter hook output priority 0 ; }", netns=ns)
            sh("nft", f"add rule inet t o tcp dport {port} tcp flags == ack drop", netns=ns)
            for c in clients:
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
            before = ss_states(ns)
            ours = sockdiag.tcp_states(procfs)
            assert ss_states(ns) == before
        finally:
            for s in [lst, *clients]:
                s.close()
    assert before["SYN_RECV"] == len(clients)
    assert ours.total["SYN_RECV"] == len(clients)
    assert ours.total["NEW_SYN_RECV"] == 0
    assert ours.total["ESTABLISHED"] == before["ESTABLISHED"] == len(clients)


def test_thousands_of_time_wait_over_many_datagrams(make_netns: Callable[[], str]) -> None:
    """Enough TIME_WAIT for many full 32 KiB datagrams (the uniform fast path), both
    families, v4-mapped and native IPv6, counted like ss counts them."""
    ns = make_netns()
    with Procfs(netns=ns) as procfs:
        many_time_wait(procfs, ("127.0.0.5", 0), "127.0.0.5", 1500)
        many_time_wait(procfs, ("::", 0), "127.0.0.6", 1200)  # v4-mapped in tcp6
        many_time_wait(procfs, ("::", 0), "::1", 700)
        before = (ss_states(ns, "-4"), ss_states(ns, "-6"))
        ours = sockdiag.tcp_states(procfs, ["TIME_WAIT"])
        mapped = [f for f in ss_lines(ns, "-6", "state", "time-wait") if "::ffff:" in f[2]]
        assert (ss_states(ns, "-4"), ss_states(ns, "-6")) == before
    assert ours.by_family[4]["TIME_WAIT"] == before[0]["TIME_WAIT"] == 1500
    assert ours.by_family[6]["TIME_WAIT"] == before[1]["TIME_WAIT"] == 1900
    assert ours.tw_v4mapped == len(mapped) == 1200


def test_states_and_destinations_agree_with_separate_dumps(
    scene_ns: tuple[str, Procfs, Scene],
) -> None:
    _, procfs, _ = scene_ns
    states, dests = sockdiag.states_and_destinations(procfs, top=4)
    assert states == sockdiag.tcp_states(procfs)
    assert dests == sockdiag.destinations(procfs, top=4)
