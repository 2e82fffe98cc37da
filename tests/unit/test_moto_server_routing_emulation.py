"""The local runtime's routing of emulated AWS requests: moto's own answer per host, found once."""

from __future__ import annotations

import pytest

from local_runtime.emulations import moto_server_routing

HOSTS = [
    "dynamodb.us-east-1.amazonaws.com",
    "ec2.eu-west-1.amazonaws.com",
    "states.us-east-1.amazonaws.com",
    "s3.amazonaws.com",
    "my-bucket.s3.us-east-1.amazonaws.com",
    "moto_api",
    "ec2",
    None,
    "nothing.example.com",
]


def test_each_host_gets_motos_own_backend_and_is_routed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = getattr(
        DomainDispatcherApplication.get_backend_for_host,
        "__wrapped__",
        DomainDispatcherApplication.get_backend_for_host,
    )
    monkeypatch.setattr(DomainDispatcherApplication, "get_backend_for_host", original)
    monkeypatch.setattr(backends, "list_of_moto_modules", backends.list_of_moto_modules)
    from moto.moto_server.werkzeug_app import create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    motos = {host: original(app, host) for host in HOSTS}
    assert motos["dynamodb.us-east-1.amazonaws.com"] == "dynamodb"
    assert motos["ec2"] == "ec2"

    routed: list[str | None] = []

    def counted(self: DomainDispatcherApplication, host: str | None) -> object:
        routed.append(host)
        return original(self, host)

    monkeypatch.setattr(DomainDispatcherApplication, "get_backend_for_host", counted)
    moto_server_routing.install(None)
    remembered = {host: app.get_backend_for_host(host) for host in HOSTS for _ in range(3)}

    assert remembered == motos
    assert sorted(map(str, routed)) == sorted(map(str, HOSTS))  # each host routed by moto once
    assert "dynamodb" in backends.list_of_moto_modules()
    assert "ec2" in backends.list_of_moto_modules()  # a listing that can be read again and again
