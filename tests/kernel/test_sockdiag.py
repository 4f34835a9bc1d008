"""sock_diag decoders on captured netlink replies, checked against `ss` of the same instant.

The fixtures (``tests/fixtures/netlink/``) were written by ``capture.py`` there: the raw
kernel replies and the ``ss`` output taken with them, so expected values come from ``ss``.
"""

from __future__ import annotations

import collections
import errno
import socket
import struct
from pathlib import Path

import pytest

from tcpchurn.errors import BadValue
from tcpchurn.kernel import sockdiag
from tcpchurn.kernel.procfs import Procfs
from tests.kernel.sockdiag_scene import SS_STATES

FIXTURES = Path(__file__).parent.parent / "fixtures"
NETLINK = FIXTURES / "netlink"


@pytest.fixture
def procfs() -> Procfs:
    return Procfs.fixture(str(FIXTURES))


def ss_rows(name: str) -> list[list[str]]:
    return [line.split() for line in (NETLINK / name).read_text().splitlines()]


def ss_counts(name: str) -> dict[str, int]:
    return dict(collections.Counter(SS_STATES[row[0]] for row in ss_rows(name)))


def unmap(addr: str) -> str:
    """``[::ffff:1.2.3.4]:80`` -> ``1.2.3.4:80`` (what the user thinks of)."""
    return addr.replace("[::ffff:", "").replace("]:", ":") if "::ffff:" in addr else addr


def messages(data: bytes) -> list[bytes]:
    """Split a captured reply at netlink message boundaries."""
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack_from("=I", data, off)
        out.append(data[off : off + ((length + 3) & ~3)])
        off += (length + 3) & ~3
    return out


def nlmsg(mtype: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, 2, 1, 0) + payload


def test_states_by_family_equal_ss(procfs: Procfs) -> None:
    ours = sockdiag.tcp_states(procfs)
    assert {k: v for k, v in ours.by_family[4].items() if v} == ss_counts("ss-tan-4.txt")
    assert {k: v for k, v in ours.by_family[6].items() if v} == ss_counts("ss-tan-6.txt")
    assert list(ours.total) == list(sockdiag.STATE_NAMES)
    assert (
        ours.total["TIME_WAIT"] == ours.by_family[4]["TIME_WAIT"] + ours.by_family[6]["TIME_WAIT"]
    )


def test_tw_v4mapped_equals_mapped_tcp6_time_wait(procfs: Procfs) -> None:
    mapped = [r for r in ss_rows("ss-tan-6.txt") if r[0] == "TIME-WAIT" and "::ffff:" in r[3]]
    native = [r for r in ss_rows("ss-tan-6.txt") if r[0] == "TIME-WAIT" and "::ffff:" not in r[3]]
    assert mapped and native  # the fixture holds both kinds
    assert sockdiag.tcp_states(procfs).tw_v4mapped == len(mapped)


def test_state_filter_on_a_fixture_filters_like_the_kernel(procfs: Procfs) -> None:
    ours = sockdiag.tcp_states(procfs, ["time-wait", "LISTEN"])
    everything = sockdiag.tcp_states(procfs)
    assert {k: v for k, v in ours.total.items() if v} == {
        "TIME_WAIT": everything.total["TIME_WAIT"],
        "LISTEN": everything.total["LISTEN"],
    }
    assert sockdiag.tcp_states(procfs, ["LISTEN"]).tw_v4mapped == 0


def test_listeners_equal_ss_ltn(procfs: Procfs) -> None:
    theirs = {(r[3].replace("*:", "[::]:"), int(r[1]), int(r[2])) for r in ss_rows("ss-ltn.txt")}
    ours = sockdiag.listeners(procfs)
    assert {(x.local, x.queue, x.backlog) for x in ours} == theirs
    assert {x.family for x in ours} == {4, 6}
    assert ours[0].to_json().keys() == {"local", "queue", "backlog", "family"}


def test_destinations_equal_ss_grouped_by_peer(procfs: Procfs) -> None:
    rows = ss_rows("ss-tan-4.txt") + ss_rows("ss-tan-6.txt")
    theirs: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in rows:
        if r[0] != "LISTEN":
            theirs[unmap(r[4])][SS_STATES[r[0]]] += 1
    ours = sockdiag.destinations(procfs, top=1000)
    assert {d.remote: d.states for d in ours} == {k: dict(v) for k, v in theirs.items()}
    sizes = [d.sockets for d in ours]
    assert sizes == sorted(sizes, reverse=True)
    assert all(d.sockets == sum(d.states.values()) for d in ours)
    assert len(sockdiag.destinations(procfs, top=2)) == 2
    mapped = [unmap(r[4]) for r in rows if r[0] == "ESTAB" and "::ffff:" in r[4]]
    assert mapped and set(mapped) <= {d.remote for d in ours}


def test_chunked_reply_gives_the_same_counts() -> None:
    data = (NETLINK / "inet_diag_v4.bin").read_bytes()
    whole = sockdiag.StateCounts()
    assert sockdiag.count_states(data, whole)
    parts = messages(data)
    assert len(parts) > 10
    chunked = sockdiag.StateCounts()
    done = [
        sockdiag.count_states(b"".join(parts[i : i + 7]), chunked) for i in range(0, len(parts), 7)
    ]
    assert done[-1] and not any(done[:-1])
    assert chunked == whole


def test_netlink_error_raises_oserror_with_the_kernel_errno() -> None:
    err = nlmsg(sockdiag.NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + bytes(16))
    with pytest.raises(OSError) as exc:
        sockdiag.count_states(err, sockdiag.StateCounts())
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(OSError):
        sockdiag.decode_listeners(err, [])
    with pytest.raises(OSError):
        sockdiag.group_destinations(err, sockdiag.ALL_STATES_MASK, collections.Counter())


def test_failed_dump_reported_in_done_payload() -> None:
    done = nlmsg(sockdiag.NLMSG_DONE, struct.pack("=i", -errno.EINTR))
    with pytest.raises(OSError) as exc:
        sockdiag.count_states(done, sockdiag.StateCounts())
    assert exc.value.errno == errno.EINTR


def test_truncated_message_length_is_rejected() -> None:
    bad = struct.pack("=IHHII", 8, sockdiag.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(80)
    with pytest.raises(OSError, match="length 8"):
        sockdiag.count_states(bad, sockdiag.StateCounts())


def test_request_layout_matches_the_uapi_structs() -> None:
    req = sockdiag.build_request(socket.AF_INET6, 1 << 10, seq=7)
    # sizeof(struct nlmsghdr) 16 + sizeof(struct inet_diag_req_v2) 56
    assert len(req) == 72
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags, seq, pid) == (72, 20, 0x301, 7, 0)
    fam, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (fam, proto, ext, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 1 << 10)
    assert req[24:] == bytes(48)


def test_bad_state_name_is_one_clear_error() -> None:
    with pytest.raises(BadValue, match=r"'TIMEWAIT'.*TIME_WAIT"):
        sockdiag.states_mask(["TIMEWAIT"])
    assert sockdiag.states_mask(["fin-wait1"]) == 1 << 4


@pytest.mark.parametrize(
    ("family", "raw", "port", "text"),
    [
        (socket.AF_INET, bytes([198, 18, 0, 2]) + bytes(12), 80, "198.18.0.2:80"),
        (socket.AF_INET6, bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1]), 8080, "127.0.0.1:8080"),
        (socket.AF_INET6, bytes(15) + b"\x01", 443, "[::1]:443"),
        (
            socket.AF_INET6,
            socket.inet_pton(socket.AF_INET6, "fd00:198:18::2"),
            80,
            "[fd00:198:18::2]:80",
        ),
    ],
)
def test_format_address(family: int, raw: bytes, port: int, text: str) -> None:
    assert sockdiag.format_address(family, raw, port) == text


def test_missing_fixture_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sockdiag.tcp_states(Procfs.fixture(str(tmp_path)))


def test_empty_state_set_counts_nothing(procfs: Procfs) -> None:
    assert sum(sockdiag.tcp_states(procfs, []).total.values()) == 0
    assert sockdiag.destinations(procfs, states=["LISTEN"]) == []


def one_by_one(parts: list[bytes]) -> sockdiag.StateCounts:
    """Counts through the per-message decoder (a single message is never 'uniform')."""
    acc = sockdiag.StateCounts()
    for part in parts:
        sockdiag.count_states(part, acc)
    return acc


@pytest.mark.parametrize("name", ["inet_diag_v4.bin", "inet_diag_v6.bin"])
def test_uniform_fast_path_counts_like_the_message_loop(name: str) -> None:
    parts = messages((NETLINK / name).read_bytes())
    by_length: dict[int, list[bytes]] = {}
    for part in parts[:-1]:  # the last one is NLMSG_DONE
        by_length.setdefault(len(part), []).append(part)
    uniform_runs = [run for run in by_length.values() if len(run) >= 2]
    assert uniform_runs  # TIME_WAIT replies (96 bytes) and full sockets share lengths
    for run in uniform_runs:
        fast = sockdiag.StateCounts()
        assert sockdiag.count_uniform(b"".join(run), fast)
        assert fast == one_by_one(run)
    if name.endswith("v6.bin"):  # both v4-mapped and native IPv6 TIME_WAIT were in a run
        tw = [p for p in parts if len(p) > 18 and p[17] == 6]
        fast = sockdiag.StateCounts()
        assert sockdiag.count_uniform(b"".join(tw), fast)
        assert 0 < fast.tw_v4mapped < fast.by_family[6][6] == len(tw)


def test_mixed_chunk_is_left_to_the_message_loop() -> None:
    data = (NETLINK / "inet_diag_v4.bin").read_bytes()
    acc = sockdiag.StateCounts()
    assert not sockdiag.count_uniform(data, acc)  # mixed lengths and NLMSG_DONE
    assert acc == sockdiag.StateCounts()


def test_states_and_destinations_from_one_dump(procfs: Procfs) -> None:
    states, dests = sockdiag.states_and_destinations(procfs, top=5)
    assert states == sockdiag.tcp_states(procfs)
    assert dests == sockdiag.destinations(procfs, top=5)


@pytest.mark.parametrize("name", ["inet_diag_v4.bin", "inet_diag_v6.bin"])
def test_uniform_destinations_group_like_the_message_loop(name: str) -> None:
    parts = messages((NETLINK / name).read_bytes())[:-1]
    for length in set(map(len, parts)):
        run = [p for p in parts if len(p) == length]
        if len(run) < 2:
            continue
        whole: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
        sockdiag.group_destinations(b"".join(run), sockdiag.ALL_STATES_MASK, whole)
        single: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
        for part in run:
            sockdiag.group_destinations(part, sockdiag.ALL_STATES_MASK, single)
        assert whole == single and sum(whole.values()) == len(run)
        # a state outside the mask sends the chunk through the filtering loop
        only_tw = 1 << sockdiag.STATE_NUMBERS["TIME_WAIT"]
        filtered: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
        sockdiag.group_destinations(b"".join(run), only_tw, filtered)
        assert filtered == collections.Counter({k: v for k, v in single.items() if k[1] == 6})


@pytest.mark.parametrize("name", ["inet_diag_v4.bin", "inet_diag_v6.bin"])
def test_a_listener_s_port_is_left_out_alike_in_both_paths(name: str) -> None:
    parts = messages((NETLINK / name).read_bytes())[:-1]
    everything: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
    for part in parts:
        sockdiag.group_destinations(part, sockdiag.ALL_STATES_MASK, everything)
    sports = collections.Counter(int.from_bytes(p[20:22], "big") for p in parts)
    busiest = sports.most_common(1)[0][0]
    left_out = 0
    for length in set(map(len, parts)):
        run = [p for p in parts if len(p) == length]
        if len(run) < 2:
            continue
        skip = frozenset({busiest})
        whole: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
        sockdiag.group_destinations(b"".join(run), sockdiag.ALL_STATES_MASK, whole, skip)
        single: collections.Counter[tuple[int, int, bytes, bytes]] = collections.Counter()
        for part in run:
            sockdiag.group_destinations(part, sockdiag.ALL_STATES_MASK, single, skip)
        assert whole == single
        kept = [p for p in run if int.from_bytes(p[20:22], "big") != busiest]
        assert sum(whole.values()) == len(kept)
        left_out += len(run) - len(kept)
    assert left_out > 0  # the fixture has a listener's connections in a uniform run
    assert sum(everything.values()) == len(parts)
