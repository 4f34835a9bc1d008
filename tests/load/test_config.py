"""Targets, load configs and source addresses: what is accepted, and the one line a user
gets for what is not."""

from __future__ import annotations

import pickle

import pytest

from tcpchurn.errors import BadValue
from tcpchurn.load.config import LoadConfig, Target, expand_source_ips, parse_target


@pytest.mark.parametrize(
    ("text", "host", "port", "path", "family", "hostname"),
    [
        ("http://127.0.0.1:8080/x", "127.0.0.1", 8080, "/x", 4, "127.0.0.1:8080"),
        ("http://127.0.0.1/", "127.0.0.1", 80, "/", 4, "127.0.0.1"),
        ("127.0.0.1:9000", "127.0.0.1", 9000, "/", 4, "127.0.0.1:9000"),
        ("[::1]:8080", "::1", 8080, "/", 6, "[::1]:8080"),
        ("http://[::1]/a?b=1", "::1", 80, "/a?b=1", 6, "[::1]"),
        ("http://localhost:81", "127.0.0.1", 81, "/", 4, "localhost:81"),
        ("HTTP://127.0.0.1:1/", "127.0.0.1", 1, "/", 4, "127.0.0.1:1"),
    ],
)
def test_parse_target_accepts(
    text: str, host: str, port: int, path: str, family: int, hostname: str
) -> None:
    t = parse_target(text)
    assert (t.host, t.port, t.path, t.family, t.hostname) == (host, port, path, family, hostname)
    assert t.url.startswith("http://")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("https://127.0.0.1/", "https is not supported"),
        ("ftp://127.0.0.1/", "scheme 'ftp'"),
        ("127.0.0.1", "give a port"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:http", "not a number"),
        ("::1:80", "brackets"),
        ("[::1:80", "Invalid IPv6 URL"),
        ("[::1]x", "bad [IPv6]"),
        ("http://:80/", "no host"),
        ("http://u:p@127.0.0.1/", "user:password"),
        ("http://no-such-host.invalid:80/", "cannot resolve host 'no-such-host.invalid'"),
        ("", "give a URL"),
    ],
)
def test_parse_target_rejects_with_one_clear_line(text: str, says: str) -> None:
    with pytest.raises(BadValue) as info:
        parse_target(text)
    msg = str(info.value)
    assert says in msg and repr(text) in msg and "\n" not in msg


def cfg(**kw: object) -> LoadConfig:
    base: dict[str, object] = {"target": parse_target("127.0.0.1:8080"), "rate": 100.0,
                               "duration": 2.0}
    base.update(kw)
    return LoadConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"rate": 0}, "--rate"), ({"rate": -5}, "--rate"), ({"duration": 0}, "--duration"),
        ({"ramp": 3.0}, "--ramp"), ({"arrival": "bursty"}, "--arrival"),
        ({"mode": "udp"}, "--mode"), ({"close": "never"}, "--close"),
        ({"timeout": 0}, "--timeout"), ({"workers": 0}, "--workers"),
        ({"max_inflight": 0}, "--max-inflight"), ({"interval": 0.001}, "--interval"),
        ({"source_ips": ("::1",)}, "--source-ip"),
    ],
)
def test_validate_names_the_option(kw: dict[str, object], option: str) -> None:
    with pytest.raises(BadValue) as info:
        cfg(**kw).validate()
    assert str(info.value).startswith(option + ":")


def test_config_is_frozen_and_pickles() -> None:
    c = cfg(source_ips=("127.0.0.1",), seed=3).validate()
    assert pickle.loads(pickle.dumps(c)) == c
    assert c.replace(rate=5.0).rate == 5.0
    with pytest.raises(AttributeError):
        c.rate = 1.0  # type: ignore[misc]
    assert isinstance(c.target, Target)


def test_expand_source_ips_ips_and_cidrs() -> None:
    assert expand_source_ips(["127.0.0.1"]) == ("127.0.0.1",)
    assert expand_source_ips(["127.0.0.8/30", "127.0.0.9,127.0.0.1"]) == (
        "127.0.0.8", "127.0.0.9", "127.0.0.10", "127.0.0.11", "127.0.0.1")
    assert expand_source_ips(["::1"]) == ("::1",)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["192.0.2.77"], "unknown source address 192.0.2.77: not assigned to any interface"),
        (["127.0.0.0/8"], "at most 1024"),
        (["not-an-ip"], "give an IP address or a CIDR"),
    ],
)
def test_expand_source_ips_rejects(values: list[str], says: str) -> None:
    with pytest.raises(BadValue) as info:
        expand_source_ips(values)
    assert says in str(info.value)
