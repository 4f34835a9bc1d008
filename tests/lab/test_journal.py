"""The journal: written before each change, undone in reverse, tolerant of crashes."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpchurn.errors import UsageError
from tcpchurn.lab.faults import set_sysctl
from tcpchurn.lab.guard import LabLock
from tcpchurn.lab.journal import (
    Entry,
    Journal,
    netns_exists,
    pids_in_netns,
    process_start_time,
    read_proc,
)
from tcpchurn.lab.topology import create_netns
from tests.conftest import sh


def test_entries_round_trip_and_torn_line_is_skipped(tmp_path: Path) -> None:
    j = Journal(str(tmp_path / "j.jsonl"))
    j.record("sysctl", netns=None, key="net/ipv4/tcp_fin_timeout", old="60")
    j.record("netns", name="tcpchurn-c-abcdef")
    j.close()
    with open(j.path, "a", encoding="utf-8") as f:
        f.write('{"kind": "netns", "na')  # power loss in the middle of a write
    assert j.entries() == [
        Entry("sysctl", {"netns": None, "key": "net/ipv4/tcp_fin_timeout", "old": "60"}),
        Entry("netns", {"name": "tcpchurn-c-abcdef"}),
    ]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bogus"):
        Journal(str(tmp_path / "j.jsonl")).record("bogus")


def test_each_entry_is_on_disk_before_record_returns(tmp_path: Path) -> None:
    j = Journal(str(tmp_path / "j.jsonl"))
    j.record("tempdir", path=str(tmp_path / "x"))
    # A second reader (the next lab after a SIGKILL) sees it without close().
    assert Journal(j.path).entries() == [Entry("tempdir", {"path": str(tmp_path / "x")})]


def test_restore_of_missing_journal_does_nothing(tmp_path: Path) -> None:
    assert Journal(str(tmp_path / "none.jsonl")).restore() == []


def test_lock_excludes_a_second_lab(tmp_path: Path) -> None:
    with LabLock(str(tmp_path)):
        with pytest.raises(UsageError, match=f"pid {os.getpid()}"):
            LabLock(str(tmp_path)).acquire()
    with LabLock(str(tmp_path)):  # released: free again
        pass


def test_process_start_time_tells_reused_pids_apart() -> None:
    proc = subprocess.Popen(["sleep", "5"])
    try:
        start = process_start_time(proc.pid)
        assert start is not None and start >= process_start_time(os.getpid())  # type: ignore[operator]
    finally:
        proc.kill()
        proc.wait()
    assert process_start_time(proc.pid) is None


@pytest.mark.root
def test_restore_undoes_in_reverse_order(make_netns: Callable[[], str], tmp_path: Path) -> None:
    ns = make_netns()
    j = Journal(str(tmp_path / "j.jsonl"))
    original = read_proc(ns, "sys/net/ipv4/tcp_fin_timeout")
    assert set_sysctl(j, ns, "net.ipv4.tcp_fin_timeout", "33") == original
    assert set_sysctl(j, ns, "net.ipv4.tcp_fin_timeout", "44") == "33"
    undone = j.restore()
    # Newest first: 44 -> 33, then 33 -> original.  The other order would leave 33.
    assert read_proc(ns, "sys/net/ipv4/tcp_fin_timeout") == original
    assert undone == [
        f"restored net.ipv4.tcp_fin_timeout = 33 in {ns}",
        f"restored net.ipv4.tcp_fin_timeout = {original} in {ns}",
    ]
    assert not os.path.exists(j.path)


@pytest.mark.root
def test_crash_between_journal_write_and_change(tmp_path: Path) -> None:
    """Entries whose change never happened are skipped, and nothing foreign is touched."""
    j = Journal(str(tmp_path / "j.jsonl"))
    name = f"tcpchurn-c-{uuid.uuid4().hex[:6]}"
    j.record("netns", name=name)  # ... killed here, before `ip netns add`
    j.record("sysctl", netns=None, key="net/ipv4/tcp_fin_timeout",
             old=read_proc(None, "sys/net/ipv4/tcp_fin_timeout"))  # ... and before the write
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        # A recorded pid whose start time does not match is not ours: left alone.
        j.record("process", pid=bystander.pid, start=-1, argv=["sleep"])
        assert j.restore() == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert not netns_exists(name)


@pytest.mark.root
def test_restore_kills_processes_started_in_a_lab_namespace_before_they_were_journaled(
    tmp_path: Path,
) -> None:
    j = Journal(str(tmp_path / "j.jsonl"))
    name = f"tcpchurn-s-{uuid.uuid4().hex[:6]}"
    create_netns(j, name)
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in pids_in_netns(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.pid in pids_in_netns(name)
        assert j.restore() == [f"deleted network namespace {name}"]
        # The restore reaped it (it was our child), so only "it ended" is observable.
        proc.wait(timeout=5)
        assert process_start_time(proc.pid) is None
    finally:
        if proc.poll() is None:
            proc.kill()
        sh("ip", "netns", "del", name, check=False)
    assert not netns_exists(name)


@pytest.mark.root
def test_global_conntrack_max_is_restored(tmp_path: Path) -> None:
    boot = read_proc(None, "sys/net/netfilter/nf_conntrack_max")
    j = Journal(str(tmp_path / "j.jsonl"))
    try:
        set_sysctl(j, None, "net.netfilter.nf_conntrack_max", "4096")
        assert read_proc(None, "sys/net/netfilter/nf_conntrack_max") == "4096"
    finally:
        j.restore()
    assert read_proc(None, "sys/net/netfilter/nf_conntrack_max") == boot
