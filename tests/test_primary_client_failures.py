"""The primary's own HTTP/1.1 client when the primary cannot be reached, when the client is
slower than the primary or leaves, and what it sends: the request's head as the primary reads it
(base path, query string, one Host, one Content-Length), over TLS verified against the CAs the
system trusts. A raw primary on loopback writes exact bytes; a client asks through the proxy."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import orjson
import pytest
from shadowtap.upstream import Origin

from tests.conftest import StartShadowtap
from tests.hostile_primary import Seen, fetch, framed, proxy, replies, running
from tests.waiting import eventually

# On uvloop too: `shadowtap serve` runs there, and its transports differ from asyncio's.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])


def closed_port() -> int:
    with socket.socket() as probe:  # bound, then closed: nobody listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_closed_port_is_a_502_naming_connection_refused(
    start_shadowtap: StartShadowtap,
) -> None:
    port = await proxy(start_shadowtap, f"http://127.0.0.1:{closed_port()}")
    got = await fetch(port)
    assert got.status == 502
    assert orjson.loads(got.body)["error"]["message"] == (
        "the primary could not be reached (ConnectionRefusedError)"
    )


async def test_an_unresolvable_host_is_a_502_naming_the_lookup_failure(
    start_shadowtap: StartShadowtap,
) -> None:
    port = await proxy(start_shadowtap, "http://primary.invalid")  # RFC 6761: never resolves
    got = await fetch(port)
    assert got.status == 502 and b"(gaierror)" in got.body


async def test_the_request_head_carries_the_base_path_the_query_one_host_one_length(
    start_shadowtap: StartShadowtap,
) -> None:
    async with running(replies(framed(b"ok"))) as primary:
        port = await proxy(start_shadowtap, primary.url + "/prefix/")
        await fetch(port, "/v1/chat/completions?api-version=2024-06-01&x=%20y", body=b"{}")
        await fetch(port, "/v1/models?limit=5", method="GET", body=b"", Host="evil.example")
        await fetch(port, "/v1/files", method="POST", body=b"", **{"Content-Length": "0"})
        lines = [seen.head.split(b"\r\n") for seen in primary.seen]
    assert [line[0] for line in lines] == [
        b"POST /prefix/v1/chat/completions?api-version=2024-06-01&x=%20y HTTP/1.1",
        b"GET /prefix/v1/models?limit=5 HTTP/1.1",
        b"POST /prefix/v1/files HTTP/1.1",
    ]
    host = primary.url.removeprefix("http://").encode()
    for head, length in zip(lines, (b"2", None, b"0"), strict=True):
        fields = [line.partition(b":") for line in head[1:] if line]
        assert [value.strip() for name, _, value in fields if name.lower() == b"host"] == [host]
        lengths = [value.strip() for name, _, value in fields if name.lower() == b"content-length"]
        assert lengths == ([length] if length else [])
        assert not any(name.lower() == b"transfer-encoding" for name, _, _ in fields)


async def test_a_base_path_with_a_space_or_utf_8_is_sent_percent_encoded(
    start_shadowtap: StartShadowtap,
) -> None:
    """The config takes the primary URL as written; aiohttp's client percent-encoded its path.
    Sent raw, a space split the request line (`POST /my base/... HTTP/1.1`: a 400 at best)."""
    async with running(replies(framed(b"ok"))) as primary:
        port = await proxy(start_shadowtap, primary.url + "/my base/é/")
        assert (await fetch(port, "/v1/x?q=%20")).status == 200
    assert primary.seen[0].request_line == b"POST /my%20base/%C3%A9/v1/x?q=%20 HTTP/1.1"
    long_label = Origin.of("http://" + "é" * 70 + ".invalid/a b")  # a host IDNA refuses
    assert long_label.base_path == "/a%20b"  # its path encoded all the same, no UnicodeError


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made by the openssl command), and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    san = "subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-addext", san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_with_a_certificate_the_system_does_not_trust_is_a_502_and_one_it_does_works(
    tmp_path: Path, start_shadowtap: StartShadowtap, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    answered: list[Seen] = []

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> None:
        answered.append(seen)
        writer.write(framed(b"over tls"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await answer(Seen(head, b"", 0, 0), writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the proxy refused our certificate
        finally:
            writer.close()

    upstream = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    try:
        untrusting = await proxy(start_shadowtap, url)
        got = await fetch(untrusting, method="GET", body=b"")
        assert got.status == 502 and b"SSLCertVerificationError" in got.body
        assert answered == []  # no request went out over a connection we could not verify
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the system trusts it
        trusting = await proxy(start_shadowtap, url)
        got = await fetch(trusting, method="GET", body=b"")
        assert (got.status, got.body) == (200, b"over tls")
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_a_slow_client_stalls_a_fast_primarys_writes_the_proxy_buffers_little(
    start_shadowtap: StartShadowtap,
) -> None:
    """The proxy pauses reading the primary while its client is behind: what the primary
    wrote waits in the primary's own send buffer, not in the proxy's memory. 64 MiB offered
    at once; whatever the kernels' socket buffers hold, most of it must stay unsent."""
    offered = 64 * 1024 * 1024
    writers: list[asyncio.StreamWriter] = []

    async def flood(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % offered)
        writer.write(b"d" * offered)
        writers.append(writer)

    async with running(flood) as primary:
        port = await proxy(start_shadowtap, primary.url)
        reader, client = await asyncio.open_connection("127.0.0.1", port)
        client.write(b"POST /v1/x HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await eventually(lambda: writers)
        # Not reading any more: wait until the primary's buffer stops draining.
        unsent = [writers[0].transport.get_write_buffer_size()]
        while True:
            await asyncio.sleep(0.2)
            unsent.append(writers[0].transport.get_write_buffer_size())
            if unsent[-1] == unsent[-2] == unsent[-3 if len(unsent) > 2 else -2]:
                break
        assert unsent[-1] > offered // 2  # at most 32 MiB in flight, across both kernels
        client.close()


async def test_a_client_leaving_mid_stream_closes_the_primarys_connection_never_pooled(
    start_shadowtap: StartShadowtap,
) -> None:
    async def stream(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if seen.index > 0:
            writer.write(framed(b"next"))
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        while True:  # until the proxy hangs up: drain raises then
            writer.write(b"8\r\ndata: x\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    async with running(stream) as primary:
        port = await proxy(start_shadowtap, primary.url)
        reader, client = await asyncio.open_connection("127.0.0.1", port)
        client.write(b"POST /v1/x HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}")
        await reader.readuntil(b"data: x")
        client.close()
        await eventually(lambda: primary.ended == [0])
        got = await fetch(port)
        assert (got.status, got.body) == (200, b"next")
        assert primary.seen[-1].connection == 1
