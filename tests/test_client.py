"""Both HTTP clients behind the seam answer alike: status, headers and body, or SendError without one."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from streamproc.client import CLIENTS, SendError, make_client
from streamproc.destinations.base import Request

pytestmark = pytest.mark.parametrize("name", CLIENTS)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.path == "/reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if request.path == "/busy":
            return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")
        headers = {"x-seen-path": request.raw_path, "x-seen-type": request.headers.get("content-type", "")}
        return web.Response(status=201, body=body[::-1], headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_an_answer_comes_back_whole(name: str, server: str) -> None:
    client = make_client(name)
    try:
        request = Request(
            "POST", f"{server}/p/%2Fx?q=a+b&e=%C3%A9", {"content-type": "application/json"}, b"abc"
        )
        status, headers, body = await client.send(request, 2.0)
        assert (status, body) == (201, b"cba")
        assert headers.get("x-seen-path") == "/p/%2Fx?q=a+b&e=%C3%A9"  # percent-escapes kept as built
        assert headers.get("X-Seen-Type") == "application/json"  # header names in any case
        status, headers, body = await client.send(Request("GET", f"{server}/busy", {}), 2.0)
        assert (status, body) == (429, b"slow down")
        assert headers.get("retry-after") == "7"
    finally:
        await client.close()


async def test_no_answer_is_a_send_error_naming_what_happened(name: str, server: str) -> None:
    client = make_client(name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        with pytest.raises(SendError) as timeout:
            await client.send(Request("POST", f"{server}/slow", {}, b"x"), 0.2)
        assert timeout.value.kind == "timeout" and str(timeout.value).startswith("timeout")
        with pytest.raises(SendError) as refused:
            await client.send(Request("GET", f"http://127.0.0.1:{closed_port}/x", {}), 2.0)
        assert refused.value.kind != "timeout"
        with pytest.raises(SendError) as reset:
            await client.send(Request("POST", f"{server}/reset", {}, b"x"), 2.0)
        assert reset.value.kind != "timeout"
    finally:
        await client.close()


async def test_a_cancelled_send_leaves_the_client_usable(name: str, server: str) -> None:
    client = make_client(name)
    try:
        task = asyncio.create_task(client.send(Request("POST", f"{server}/slow", {}, b"x"), 1.0))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status, _, _ = await client.send(Request("POST", f"{server}/ok", {}, b"x"), 2.0)
        assert status == 201
    finally:
        await client.close()


def test_a_process_exits_cleanly_after_closing_the_client(name: str) -> None:
    # On the plain asyncio loop, a client whose I/O thread outlives the loop can abort the process.
    script = textwrap.dedent(
        f"""
        import asyncio
        from aiohttp import web
        from streamproc.client import make_client
        from streamproc.destinations.base import Request

        async def main():
            app = web.Application()
            app.router.add_get("/", lambda r: web.Response(text="ok"))
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            client = make_client({name!r})
            for _ in range(20):
                await client.send(Request("GET", f"http://127.0.0.1:{{port}}/", {{}}), 2.0)
            await client.close()
            await runner.cleanup()

        asyncio.run(main())
        print("done")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
