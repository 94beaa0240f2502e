"""REST and gRPC serve TLS when given a certificate and key; clients trust it through AME_TLS_CA_FILE."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ame.contracts.api.v1 import ame_service_pb2, ame_service_pb2_grpc
from ame.sdk.credentials import aio_channel, bearer, discover_token
from tests.stack_fixtures import running_api

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_rest_and_grpc_serve_tls_with_a_certificate(
    nats_url: str, pg_dsn: str, bus_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    async with running_api(nats_url, pg_dsn, bus_prefix, tls_cert_file=cert, tls_key_file=key) as api:
        assert api.rest_url.startswith("https://")
        async with httpx.AsyncClient(
            base_url=api.rest_url, verify=ssl.create_default_context(cafile=str(cert)), headers=bearer(discover_token())
        ) as c:
            me = await c.get("/v1/whoami")
            assert me.status_code == 200 and me.json()["scope"] == "server-admin"
        async with httpx.AsyncClient(base_url=api.rest_url) as untrusting:  # the system's CAs do not know it
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/healthz")

        monkeypatch.setenv("AME_TLS_CA_FILE", str(cert))
        async with aio_channel(api.grpc_target, discover_token(), tls=True) as channel:
            reply = await ame_service_pb2_grpc.AmeServiceStub(channel).WhoAmI(
                ame_service_pb2.WhoAmIRequest(), timeout=10
            )
            assert reply.organisation == "default"
        async with aio_channel(api.grpc_target, discover_token(), tls=False) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ame_service_pb2_grpc.AmeServiceStub(plain).WhoAmI(ame_service_pb2.WhoAmIRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
