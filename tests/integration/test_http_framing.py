"""The local API server at the HTTP level, with raw sockets: a body is read as its framing says
(chunked or Content-Length), a framing it cannot trust closes the connection after a 400, every
method gets an answer, each answer leaves in one write, and many clients at once are all served,
each with its own request."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import terminate_recommendation

Answer = tuple[int, dict[str, str], bytes]


def exchange(runtime: LocalRuntime, data: bytes) -> bytes:
    """Everything the server sends back on one connection for `data`, once it closes the connection
    (the client has said it sends nothing more)."""
    with socket.create_connection((runtime.host, runtime.api_port), timeout=20) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def answers(received: bytes) -> list[Answer]:
    """The HTTP responses in `received`, one after another (each delimited by its Content-Length)."""
    found: list[Answer] = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        found.append((int(status_line.split()[1]), headers, rest[:length]))
        received = rest[length:]
    return found


def request(runtime: LocalRuntime, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {runtime.host}", f"x-api-key: {runtime.api_key}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def listing(runtime: LocalRuntime) -> bytes:
    return request(runtime, "GET", "/executions?customer_id=cust-framing", {})


def test_a_chunked_body_is_read_as_the_body_and_the_connection_goes_on(runtime: LocalRuntime) -> None:
    body = json.dumps({"recommendation_id": "rec-sent-in-chunks"}).encode()
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}

    received = answers(
        exchange(runtime, request(runtime, "POST", "/executions/execute", headers, chunked) + listing(runtime))
    )

    # The body reached the route (an unknown recommendation, not a missing one), and the next
    # request on the connection is the listing, not the chunks' bytes.
    assert [status for status, _, _ in received] == [404, 200]
    assert "rec-sent-in-chunks" in json.loads(received[0][2])["message"]


@pytest.mark.parametrize(
    "framing",
    [
        {"Content-Length": "-5"},
        {"Content-Length": "twelve"},
        {"Content-Length": "0x10"},
        {"Content-Length": "5", "Transfer-Encoding": "chunked"},
        {"Transfer-Encoding": "gzip"},
    ],
    ids=["negative-length", "non-numeric-length", "hex-length", "length-and-chunked", "unknown-encoding"],
)
def test_a_body_whose_end_is_unknown_gets_400_and_the_connection_is_closed(
    runtime: LocalRuntime, framing: dict[str, str]
) -> None:
    sent = request(runtime, "POST", "/executions/execute", framing, b'{"x": 1}') + listing(runtime)

    received = answers(exchange(runtime, sent))

    # Nothing after the refused request is read: its bytes could be anything.
    assert [status for status, _, _ in received] == [400]
    assert json.loads(received[0][2])["error"] == "bad_framing"
    assert received[0][1]["connection"] == "close"


def test_two_different_content_lengths_get_400(runtime: LocalRuntime) -> None:
    sent = request(runtime, "POST", "/executions/execute", {}, b"{}").replace(
        b"\r\n\r\n", b"\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 1
    )

    assert [status for status, _, _ in answers(exchange(runtime, sent))] == [400]


def test_head_answers_as_get_without_the_body(runtime: LocalRuntime, api: ApiClient) -> None:
    path = "/executions?customer_id=cust-framing"
    get = api.request("GET", path)

    received = exchange(runtime, request(runtime, "HEAD", path, {"Connection": "close"}))

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {len(get.content)}".encode() in head
    assert body == b""


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_methods_the_api_does_not_serve_get_405_with_the_ones_it_does(runtime: LocalRuntime, method: str) -> None:
    received = answers(exchange(runtime, request(runtime, method, "/executions", {})))

    assert [(status, headers["allow"]) for status, headers, _ in received] == [(405, "GET, HEAD, POST")]
    assert json.loads(received[0][2])["error"] == "method_not_allowed"


def test_fifty_clients_connecting_at_once_are_all_served(runtime: LocalRuntime) -> None:
    clients = 50
    all_ready = threading.Barrier(clients)
    outcomes: list[object] = []

    def client() -> None:
        try:
            all_ready.wait(timeout=60)
            with socket.create_connection((runtime.host, runtime.api_port), timeout=60) as connection:
                connection.sendall(
                    request(runtime, "GET", "/executions?customer_id=cust-framing", {"Connection": "close"})
                )
                received = b""
                while chunk := connection.recv(65536):
                    received += chunk
                outcomes.append(answers(received)[0][0])
        except (OSError, threading.BrokenBarrierError) as error:
            outcomes.append(error)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == [200] * clients


def ports(sock: socket.socket) -> tuple[int, int] | None:
    """A TCP socket's own port and its peer's; None for any other socket."""
    try:
        return int(sock.getsockname()[1]), int(sock.getpeername()[1])
    except (OSError, IndexError, TypeError, ValueError):
        return None


def test_each_answer_leaves_the_server_in_one_write_with_nagle_off(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers and body written apart meet Nagle's algorithm and the client's delayed ACK: each
    answer then waits about 40 ms for nothing."""
    # Given every write the server makes on this test's connection recorded, with the socket's TCP_NODELAY
    writes: list[tuple[bytes, int]] = []
    send_all = socket.socket.sendall
    with socket.create_connection((runtime.host, runtime.api_port), timeout=20) as connection:
        client_port = connection.getsockname()[1]

        def recording(sock: socket.socket, data: Any, *args: Any) -> None:
            if ports(sock) == (runtime.api_port, client_port):  # the server's side of this connection
                writes.append((bytes(data), sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            send_all(sock, data, *args)

        monkeypatch.setattr(socket.socket, "sendall", recording)

        # When the client asks for a listing, then for an execution that does not exist, on one connection
        connection.sendall(
            listing(runtime) + request(runtime, "GET", "/executions/exec-unknown", {"Connection": "close"})
        )
        received = b""
        while chunk := connection.recv(65536):
            received += chunk

    # Then each answer was one write: its status line, its headers and its whole body, with Nagle off
    assert [status for status, _, _ in answers(received)] == [200, 404]
    assert [data.split(b"\r\n", 1)[0] for data, _ in writes] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]
    assert [data.partition(b"\r\n\r\n")[2] for data, _ in writes] == [body for _, _, body in answers(received)]
    assert all(no_delay for _, no_delay in writes)


def test_many_registrations_at_once_each_get_the_answer_to_their_own_request(
    runtime: LocalRuntime, customer_id: str
) -> None:
    # Given 500 recommendations, each of its own instance, sent by 25 clients at once, each
    # client on its own connection, one request after another
    clients, per_client = 25, 20
    all_ready = threading.Barrier(clients)
    outcomes: list[tuple[dict[str, Any], int, dict[str, Any]] | BaseException] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(runtime.host, runtime.api_port, timeout=120)
        try:
            all_ready.wait(timeout=60)
            for sent in range(per_client):
                body = terminate_recommendation(customer_id, f"i-{index:08x}{sent:09x}", estimated_monthly_savings=sent)
                connection.request(
                    "POST",
                    "/recommendations",
                    body=json.dumps(body),
                    headers={"x-api-key": runtime.api_key, "Content-Type": "application/json"},
                )
                answer = connection.getresponse()
                outcomes.append((body, answer.status, json.loads(answer.read())))
        except (OSError, threading.BrokenBarrierError, http.client.HTTPException) as error:
            outcomes.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every one was registered (none failed, none got a 5xx), and each answer is the recommendation
    # its own request sent
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert not errors
    answered = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert [status for _, status, _ in answered] == [201] * clients * per_client
    mismatched = [
        (sent["resource_id"], got.get("resource_id"))
        for sent, _, got in answered
        if (got.get("resource_id"), got.get("estimated_monthly_savings"))
        != (sent["resource_id"], sent["estimated_monthly_savings"])
    ]
    assert mismatched == []
    assert len({got["recommendation_id"] for _, _, got in answered}) == clients * per_client


@pytest.fixture
def held_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, tuple[threading.Event, threading.Event]]]:
    """GET /recommendations/{id} held in the API function once its route is found (before the route
    runs) until the test releases it, per id: two requests provably in the function at once."""
    # Imported here: the handler reads its environment at import, which the runtime sets up.
    import functions.api.handler as api_handler

    holds: dict[str, tuple[threading.Event, threading.Event]] = {}
    call_route = api_handler.app._call_route

    def held(route: Any, route_arguments: dict[str, str]) -> Any:
        if hold := holds.get(route_arguments.get("recommendation_id", "")):
            arrived, released = hold
            arrived.set()
            released.wait(timeout=30)
        return call_route(route, route_arguments)

    monkeypatch.setattr(api_handler.app, "_call_route", held)
    yield holds
    for _, released in holds.values():
        released.set()


def test_two_requests_in_the_api_at_once_each_get_their_own_answer(
    api: ApiClient,
    recommend: Any,
    held_lookups: dict[str, tuple[threading.Event, threading.Event]],
) -> None:
    first, second = recommend("i-0aaaaaaaaaaaaaaa1"), recommend("i-0aaaaaaaaaaaaaaa2")
    for recommendation_id in (first, second):
        held_lookups[recommendation_id] = (threading.Event(), threading.Event())
    answered: dict[str, Any] = {}

    def look_up(recommendation_id: str) -> None:
        answered[recommendation_id] = api.request("GET", f"/recommendations/{recommendation_id}")

    # Given the second request inside the API function, the first one enters and finishes
    later = threading.Thread(target=look_up, args=(second,))
    later.start()
    assert held_lookups[second][0].wait(timeout=30)
    earlier = threading.Thread(target=look_up, args=(first,))
    earlier.start()
    assert held_lookups[first][0].wait(timeout=30)
    held_lookups[first][1].set()
    earlier.join()
    # When the second one finishes after it
    held_lookups[second][1].set()
    later.join()

    # Then each got its own recommendation, none a 500
    assert [(answered[r].status_code, answered[r].json()["recommendation_id"]) for r in (first, second)] == [
        (200, first),
        (200, second),
    ]
