"""Serves the real API handler on localhost: each HTTP request becomes an API Gateway proxy event."""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cost_engine.topology import APPROVAL_PAGE_PATH

# Runs the API function on one proxy event and returns its proxy response.
ApiHandler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
# What the API serves; other methods are answered here, as API Gateway answers them before any function.
SERVED_METHODS = "GET, HEAD, POST"


CHUNK_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,8}$")


class BodyUnreadable(Exception):
    """The request's framing (Content-Length, Transfer-Encoding) does not say where its body ends."""


class BodyTooLarge(Exception):
    """The body is over MAX_BODY_BYTES: it is not read."""


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when dozens of clients connect at once.
    request_queue_size = 128
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Each response is one write (Handler._send); without Nagle's algorithm nothing small waits
        # for the client's delayed ACK of what went before it either.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def proxy_event(
    method: str, raw_path: str, headers: dict[str, str], body: str | None, source_ip: str, api_key_id: str | None = None
) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "accountId": "123456789012",
            "apiId": "local",
            # The key's name, as API Gateway gives an API key's id: the key itself stays here.
            "identity": {"sourceIp": source_ip, "userArn": None, "apiKeyId": api_key_id},
        },
        "body": body,
        "isBase64Encoded": False,
    }


class ApiServer:
    def __init__(self, handler: ApiHandler, host: str, port: int, api_keys: Mapping[str, str]) -> None:
        self.handler = handler
        # Each accepted x-api-key and the name of its principal (cost_engine.access: "apikey:<name>").
        self.api_keys = dict(api_keys)
        self._server = _Server((host, port), self._request_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A client that sends less body than it announced, or leaves its connection idle, holds a
            # thread at most this long (seconds).
            timeout = 120

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the API logs itself
                return

            def _send(self, status: int, body: str, headers: dict[str, str]) -> None:
                """The status line, the headers and the body in one buffer, written at once: headers
                and body written apart meet Nagle's algorithm and the client's delayed ACK, which held
                each answer about 40 ms."""
                data = body.encode()
                self.log_request(status)
                reason = self.responses[status][0] if status in self.responses else ""
                lines = [
                    f"{self.protocol_version} {status} {reason}",
                    f"Server: {self.version_string()}",
                    f"Date: {self.date_time_string()}",
                    *(f"{key}: {value}" for key, value in headers.items() if key.lower() != "content-length"),
                    f"Content-Length: {len(data)}",
                ]
                if self.close_connection:  # the client learns that nothing more is read
                    lines.append("Connection: close")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
                self.wfile.write(head if self.command == "HEAD" else head + data)

            def _refuse(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": code, "message": message})
                self._send(status, body, {"Content-Type": "application/json"})

            def _read_body(self) -> bytes:
                """The body as its framing delimits it: chunked, or Content-Length bytes."""
                lengths = self.headers.get_all("Content-Length") or []
                encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
                if encoding:
                    # Both framings at once is how requests are smuggled past a proxy: refused.
                    if encoding != "chunked" or lengths:
                        raise BodyUnreadable("only Transfer-Encoding: chunked, without Content-Length, is accepted")
                    return self._read_chunks()
                if len(set(lengths)) > 1 or not all(value.strip().isdigit() for value in lengths):
                    raise BodyUnreadable("Content-Length must be one number of bytes")
                length = int(lengths[0]) if lengths else 0
                if length > MAX_BODY_BYTES:
                    raise BodyTooLarge
                return self.rfile.read(length) if length else b""

            def _read_chunks(self) -> bytes:
                body = bytearray()
                while True:
                    size_line = self.rfile.readline(1024).split(b";")[0].strip()
                    if not CHUNK_SIZE.match(size_line):
                        raise BodyUnreadable("a chunk's size is not a hexadecimal number")
                    size = int(size_line, 16)
                    if len(body) + size > MAX_BODY_BYTES:
                        raise BodyTooLarge
                    if size == 0:
                        break
                    body += self.rfile.read(size)
                    if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                        raise BodyUnreadable("a chunk is longer than its size says")
                while self.rfile.readline(8192).strip():  # trailer fields: not used
                    pass
                return bytes(body)

            def _handle(self) -> None:
                try:
                    raw = self._read_body()
                except BodyTooLarge:
                    self.close_connection = True
                    return self._refuse(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
                except BodyUnreadable as error:
                    # Where this request ends is unknown, so nothing after it on the connection can be read.
                    self.close_connection = True
                    return self._refuse(400, "bad_framing", str(error))
                # The approval pages are public on AWS too: the link's signature stands in for IAM.
                public = urlsplit(self.path).path.startswith(APPROVAL_PAGE_PATH + "/")
                key_name = server.api_keys.get(self.headers.get("x-api-key") or "")
                if not public and key_name is None:
                    return self._refuse(403, "forbidden", "missing or wrong x-api-key header")
                try:
                    body = raw.decode("utf-8") if raw else None
                except UnicodeDecodeError:
                    return self._refuse(400, "invalid_body", "the request body is not UTF-8 text")
                headers = {k.lower(): v for k, v in self.headers.items()}
                method = "GET" if self.command == "HEAD" else self.command
                event = proxy_event(method, self.path, headers, body, self.client_address[0], key_name)
                try:
                    response = server.handler(event)
                except Exception:  # API Gateway answers 502 when the function itself fails
                    return self._refuse(502, "bad_gateway", "the API function failed; its output is in the logs")
                response_headers = dict(response.get("headers") or {})
                for key, values in (response.get("multiValueHeaders") or {}).items():
                    response_headers.setdefault(key, ",".join(values))
                self._send(int(response["statusCode"]), response.get("body") or "", response_headers)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            # HEAD: GET's status and headers without its body, as HTTP defines it (see _send).
            do_HEAD = _handle

            def _not_served(self) -> None:
                self.close_connection = True  # its body, if any, is not read
                body = json.dumps({"error": "method_not_allowed", "message": f"use {SERVED_METHODS}"})
                self._send(405, body, {"Content-Type": "application/json", "Allow": SERVED_METHODS})

            do_OPTIONS = do_TRACE = do_CONNECT = _not_served

        return Handler
