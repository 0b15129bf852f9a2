"""The Optuna dashboard of one sweep's study, read-only and for its own address only.

``python -m raypair.cli.dashboard DB HOST PORT`` serves ``optuna_dashboard.wsgi`` behind a WSGI
guard (``raypair ui`` starts it). The dashboard's own server has write endpoints (delete a study,
tell a trial, save a note) and answers any ``Host``, so a web page the user opens elsewhere could
reach it through DNS rebinding. The guard answers only GET and HEAD (the dashboard reads with
them; everything that writes uses another method) and only requests whose ``Host`` is the address
it serves (or a loopback name on a loopback address): everything else gets 405 or 403 and never
reaches the study.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::")
READ_METHODS = ("GET", "HEAD")

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def allowed_hosts(host: str, port: int) -> set[str]:
    """The ``Host`` header values a request may carry to reach a server bound to ``host:port``: that
    address; every loopback name on a loopback address; this machine's names and addresses on a
    wildcard one (``0.0.0.0``, ``::``)."""
    import socket

    names = {host.lower()}
    if host in LOOPBACK:
        names |= set(LOOPBACK)
    elif host in WILDCARD:
        names |= set(LOOPBACK) | {socket.gethostname().lower(), socket.getfqdn().lower()}
        names |= {a[4][0] for n in list(names) for a in _addresses(n)}
    names |= {f"[{n}]" for n in names if ":" in n and not n.startswith("[")}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def _addresses(name: str) -> list[Any]:
    import socket

    try:
        return socket.getaddrinfo(name, None)
    except OSError:
        return []


def guard(app: App, host: str, port: int) -> App:
    """``app`` answering reads addressed to ``host:port`` only."""
    hosts = allowed_hosts(host, port)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_HOST", "").lower() not in hosts:
            return _refuse(start_response, "403 Forbidden", "this server answers only its own address")
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            return _refuse(start_response, "405 Method Not Allowed", "this dashboard is read-only")
        return app(environ, start_response)

    return guarded


def _refuse(start_response: Callable[..., Any], status: str, why: str) -> list[bytes]:
    body = f"{status}: {why}\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                            ("Allow", ", ".join(READ_METHODS))])
    return [body]


def main(argv: list[str]) -> None:
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    db, host, port = argv[0], argv[1], int(argv[2])

    class Server(ThreadingMixIn, WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return None

    app = guard(optuna_dashboard.wsgi(f"sqlite:///{db}"), host, port)
    make_server(host, port, app, server_class=Server, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
