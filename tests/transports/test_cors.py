"""CORS: none unless configured; then the configured origins may read streams
and polls, and a preflight may ask to send Last-Event-ID or a Bearer token.
"""

from __future__ import annotations

import httpx
from conftest import Server


def test_no_cors_unless_configured(server: Server) -> None:
    rv = server.http.get(
        "/events/c?transport=poll",
        headers={"Origin": "http://elsewhere.example"},
        timeout=5,
    )
    assert "access-control-allow-origin" not in rv.headers


def test_cors_when_configured() -> None:
    srv = Server(
        "gevent",
        config={"CORS_ORIGINS": ["http://app.example"], "CORS_CREDENTIALS": True},
    ).start()
    try:
        allowed = {"Origin": "http://app.example"}
        rv = srv.http.get("/events/c?transport=poll", headers=allowed, timeout=5)
        assert rv.headers["access-control-allow-origin"] == "http://app.example"
        assert rv.headers["access-control-allow-credentials"] == "true"
        preflight = httpx.options(
            srv.url + "/events/c",
            headers={
                **allowed,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id",
            },
            timeout=5,
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        allow = preflight.headers["access-control-allow-headers"]
        assert allow == "Last-Event-ID, Authorization"  # and a Bearer token
        # A refusal is readable too: the page can tell why (a 403, its reason).
        refused = srv.http.get("/events/secret", headers=allowed, timeout=5)
        assert refused.status_code == 403
        assert refused.headers["access-control-allow-origin"] == "http://app.example"
        other = srv.http.get(
            "/events/c?transport=poll",
            headers={"Origin": "http://evil.example"},
            timeout=5,
        )
        assert "access-control-allow-origin" not in other.headers
        with httpx.stream(
            "GET", srv.url + "/events/c", headers=allowed, timeout=5
        ) as stream_rv:
            assert (
                stream_rv.headers["access-control-allow-origin"] == "http://app.example"
            )
    finally:
        srv.stop()
