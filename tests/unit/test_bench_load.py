"""bench/load.py's small HTTP client: keep-alive, a server that closes, an answer it refuses."""

from __future__ import annotations

import asyncio

from bench.load import HttpConnection, _drive


async def _serve(answers: list[bytes]):
    """A server that reads one request per answer (by Content-Length) and writes the next answer."""
    served = {"connections": 0, "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answer = answers[served["requests"] % len(answers)]
                served["requests"] += 1
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], served


def accepted(message_id: str, close: bool = False) -> bytes:
    body = b'{"status":"received","message_id":"%s"}' % message_id.encode()
    extra = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_requests_share_a_connection_and_a_closed_one_is_reopened():
    async def scenario():
        server, port, served = await _serve([accepted("a"), accepted("b", close=True)])
        async with server:
            report = await _drive(f"http://127.0.0.1:{port}/api", [b"{}"] * 4, concurrency=1, rate=None, headers={})
        return report, served

    report, served = asyncio.run(scenario())
    assert [(r[2], r[3]) for r in report["results"]] == [(202, "a"), (202, "b"), (202, "a"), (202, "b")]
    assert served["connections"] == 2  # kept alive until the server said close


def test_a_chunked_answer_counts_as_a_failed_request():
    async def scenario():
        chunked = b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        server, port, _ = await _serve([chunked])
        async with server:
            connection = HttpConnection("127.0.0.1", port)
            try:
                await connection.post(b"POST /api HTTP/1.1\r\nContent-Length: 2\r\n\r\n", b"{}")
            except ConnectionError as error:
                return str(error)
            return "answered"

    assert "chunked" in asyncio.run(scenario())
