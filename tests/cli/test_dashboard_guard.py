"""The guard in front of the Optuna dashboard (``raypair.cli.dashboard``), as a WSGI function: only
reads, only requests addressed to the server's own address, reach the dashboard."""
from __future__ import annotations

import pytest

from raypair.cli.dashboard import allowed_hosts, guard


def _call(method: str, host: str, bind: str = "127.0.0.1", port: int = 8081) -> tuple[str, list[str]]:
    reached: list[str] = []

    def app(environ, start_response):
        reached.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"study"]

    seen: list[str] = []
    guard(app, bind, port)({"REQUEST_METHOD": method, "HTTP_HOST": host, "PATH_INFO": "/api/studies"},
                           lambda status, headers: seen.append(status))
    return seen[0], reached


@pytest.mark.parametrize("host", ["127.0.0.1:8081", "localhost:8081", "LOCALHOST:8081", "[::1]:8081"])
def test_reads_addressed_to_the_loopback_reach_the_dashboard(host):
    assert _call("GET", host) == ("200 OK", ["/api/studies"])
    assert _call("HEAD", host)[0] == "200 OK"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_never_reach_it(method):
    assert _call(method, "127.0.0.1:8081") == ("405 Method Not Allowed", [])


@pytest.mark.parametrize("host", ["evil.example:8081", "127.0.0.1:9999", "", "127.0.0.1", "localhost.evil.example:8081"])
def test_a_request_for_another_host_is_refused(host):
    """A DNS-rebinding page sends its own name as Host; another port is another server."""
    assert _call("GET", host) == ("403 Forbidden", [])


def test_a_specific_address_allows_itself_and_not_the_loopback_names():
    assert allowed_hosts("10.1.2.3", 80) == {"10.1.2.3:80", "10.1.2.3"}
    assert _call("GET", "10.1.2.3:8081", bind="10.1.2.3")[0] == "200 OK"
    assert _call("GET", "localhost:8081", bind="10.1.2.3")[0] == "403 Forbidden"


def test_a_wildcard_address_allows_this_machines_names():
    import socket

    hosts = allowed_hosts("0.0.0.0", 8081)
    assert {f"{socket.gethostname().lower()}:8081", "127.0.0.1:8081"} <= hosts
    assert "evil.example:8081" not in hosts
