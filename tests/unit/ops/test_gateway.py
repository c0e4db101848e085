"""The compose gateway's HTTPS, on real processes: Debian's nginx runs deploy/gateway/nginx.conf
with deploy/make-secrets' throwaway certificate, in front of three recording upstreams.

Docker's DNS is absent here, so the file is rendered for loopback: its service ports and
upstream names become 127.0.0.1 addresses (an IP needs no `resolver`), /tmp (where nginx
writes) a folder of the test's own, /run/secrets the secrets folder. Everything else — TLS
protocols and ciphers, the refusal of plain HTTP, what is proxied — is the file as compose runs it.
nginx (Debian's `nginx`) must be installed: .ci/run installs it; these tests fail, not skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.cli import common
from shared.plumbing import tls
from tests.support.ports import free_ports
from tests.unit.ops.test_compose import COMPOSE, DEPLOY, SERVICES, filled_env, make_secrets
from tests.unit.ops.test_compose_scaling import PORTS, config

GATEWAY_CONF = DEPLOY / "gateway" / "nginx.conf"
TOKEN = "gateway-test-token-0123456789"
START_S = 20.0  # a bound on nginx's start, not a measurement


class Recorder(ThreadingHTTPServer):
    """A service stand-in: answers every GET with what it received, and keeps it."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.seen: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        seen = {
            "service": self.server.name,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "forwarded_proto": self.headers.get("X-Forwarded-Proto"),
        }
        self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `seen`."""


@dataclass
class Gateway:
    """A running gateway: its HTTPS port per service, the CA that signed it, the upstreams."""

    ports: dict[str, int]
    cafile: Path
    upstreams: dict[str, Recorder] = field(default_factory=dict)

    def seen(self) -> int:
        return sum(len(u.seen) for u in self.upstreams.values())


def render(conf: str, run_dir: Path, secrets: Path, listen: dict[str, int], health: int,
           upstreams: dict[str, int]) -> str:  # fmt: skip
    """The compose file for loopback; each replaced text must be there exactly as expected."""

    def sub(text: str, old: str, new: str, count: int) -> str:
        assert text.count(old) == count, f"{old!r} in nginx.conf: {text.count(old)}, not {count}"
        return text.replace(old, new)

    conf = sub(conf, "/tmp/", f"{run_dir}/", 6)  # the pid file and five temporary folders
    conf = sub(conf, "/run/secrets/", f"{secrets}/", 2)
    for name, port in PORTS.items():
        conf = sub(conf, f"listen {port} ssl;", f"listen 127.0.0.1:{listen[name]} ssl;", 1)
        conf = sub(conf, f"http://{name}:8000;", f"http://127.0.0.1:{upstreams[name]};", 1)
    return sub(conf, "listen 8080;", f"listen 127.0.0.1:{health};", 1)


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until nginx accepts on `port` (it failed if it exited first: its log says why)."""
    deadline = threading.Event()
    timer = threading.Timer(START_S, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            assert process.poll() is None, f"nginx exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                deadline.wait(0.05)
        raise AssertionError(f"nginx did not listen within {START_S}s: {log.read_text()}")
    finally:
        timer.cancel()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    assert nginx, "nginx missing: apt-get install -y nginx (.ci/run does)"
    root = tmp_path_factory.mktemp("gateway")
    secrets = make_secrets(root / "secrets")
    run_dir = root / "run"
    run_dir.mkdir()
    upstreams = {name: Recorder(name) for name in SERVICES}
    threads = [threading.Thread(target=u.serve_forever, daemon=True) for u in upstreams.values()]
    for thread in threads:
        thread.start()
    *listen, health = free_ports(len(SERVICES) + 1)
    ports = dict(zip(SERVICES, listen, strict=True))
    conf = run_dir / "nginx.conf"
    upstream_ports = {name: u.server_address[1] for name, u in upstreams.items()}
    conf.write_text(
        render(GATEWAY_CONF.read_text(), run_dir, secrets, ports, health, upstream_ports)
    )
    log = run_dir / "nginx.log"
    with log.open("wb") as out:
        # the master stays in the foreground: the test owns it and stops it
        process = subprocess.Popen(
            [nginx, "-p", str(run_dir), "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_listening(health, process, log)
        yield Gateway(ports, secrets / "gateway_ca.pem", upstreams)
    finally:
        process.terminate()
        process.wait(timeout=30)
        for upstream in upstreams.values():
            upstream.shutdown()
            upstream.server_close()


def test_https_with_the_gateway_ca_reaches_each_service_with_token_and_query(
    gateway: Gateway,
) -> None:
    verify = tls.http_verify(str(gateway.cafile))
    for name, port in gateway.ports.items():
        for host in ("localhost", "127.0.0.1"):  # both are in the certificate
            # a signed download link's query (services/export) passes through unchanged
            path = f"/v1/downloads/bnd_1?expires=1767225600&kid=20261206-ab12&sig=a%2Fb-_&h={host}"
            response = httpx.get(
                f"https://{host}:{port}{path}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                verify=verify,
                timeout=10,
            )
            assert response.status_code == 200, response.text
            assert response.json() == {
                "service": name,
                "path": path,
                "authorization": f"Bearer {TOKEN}",
                "forwarded_proto": "https",
            }


def test_a_tls_1_2_client_is_served_too(gateway: Gateway) -> None:
    """The cipher list fits the ECDSA certificate for TLS 1.2 clients (1.3 is the default)."""
    context = ssl.create_default_context(cafile=str(gateway.cafile))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with httpx.Client(verify=context) as client:
        response = client.get(f"https://localhost:{gateway.ports['consent']}/healthz")
        assert response.status_code == 200
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("ssl_object").version() == "TLSv1.2"


def test_the_cli_reaches_the_gateway_with_pp_http_cafile(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PP_RETENTION_URL", f"https://localhost:{gateway.ports['retention']}")
    monkeypatch.setenv("PP_API_TOKEN", TOKEN)
    monkeypatch.setenv("PP_HTTP_CAFILE", str(gateway.cafile))
    answer = common.api("retention", "/v1/holds", limit=5)
    assert answer["path"] == "/v1/holds?limit=5"
    assert answer["authorization"] == f"Bearer {TOKEN}"
    assert answer["service"] == "retention"


def test_plain_http_on_a_service_port_is_closed_unanswered_and_never_proxied(
    gateway: Gateway,
) -> None:
    before = gateway.seen()
    for port in gateway.ports.values():
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            httpx.get(
                f"http://127.0.0.1:{port}/v1/ops/readiness",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
    assert gateway.seen() == before


def test_the_cli_given_http_for_the_gateway_says_to_use_https(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PP_CONSENT_URL", f"http://127.0.0.1:{gateway.ports['consent']}")
    monkeypatch.setenv("PP_API_TOKEN", TOKEN)
    with pytest.raises(common.CliError, match=r"set PP_CONSENT_URL=https://… and PP_HTTP_CAFILE"):
        common.api("consent", "/v1/subjects/usr_1")


def test_a_client_that_does_not_trust_the_gateway_ca_is_refused(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_secrets(tmp_path / "other") / "gateway_ca.pem"  # another throwaway CA
    before = gateway.seen()
    url = f"https://localhost:{gateway.ports['export']}/healthz"
    for verify in (tls.http_verify(str(other)), tls.http_verify(None)):  # and the system CAs
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, verify=verify, timeout=10)
    monkeypatch.setenv("PP_EXPORT_URL", f"https://localhost:{gateway.ports['export']}")
    monkeypatch.setenv("PP_API_TOKEN", TOKEN)
    monkeypatch.setenv("PP_HTTP_CAFILE", str(other))
    with pytest.raises(common.CliError, match=r"certificate was refused.*check PP_HTTP_CAFILE"):
        common.api("export", "/v1/exports")
    assert gateway.seen() == before  # the handshake failed: nothing was proxied


def test_make_secrets_certificate_names_localhost_127_0_0_1_and_gateway(tmp_path: Path) -> None:
    secrets = make_secrets(tmp_path / "s")
    result = subprocess.run(
        ["openssl", "x509", "-in", str(secrets / "gateway_tls_cert"), "-noout", "-ext",
         "subjectAltName"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    names = {n.strip() for n in result.stdout.splitlines()[1].split(",")}
    assert names == {"DNS:localhost", "IP Address:127.0.0.1", "DNS:gateway"}
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(secrets / "gateway_ca.pem"),
         str(secrets / "gateway_tls_cert")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # a real certificate put in their place is kept; no CA key is left behind to sign others
    (secrets / "gateway_tls_cert").write_text("real chain\n")
    make_secrets(secrets)
    assert (secrets / "gateway_tls_cert").read_text() == "real chain\n"
    assert not list(secrets.glob("*ca.key"))


def test_compose_mounts_the_certificate_where_nginx_conf_reads_it(tmp_path: Path) -> None:
    resolved = config(filled_env(tmp_path))
    gateway = resolved["services"]["gateway"]
    mounted = {s["source"] for s in gateway["secrets"]}
    assert mounted == {"gateway_tls_cert", "gateway_tls_key"}
    conf = GATEWAY_CONF.read_text()
    for name in mounted:
        assert Path(resolved["secrets"][name]["file"]).is_file()
        assert f"/run/secrets/{name};" in conf
    # the defaults, without a setting, are make-secrets' files in ./secrets
    raw = yaml.safe_load(COMPOSE.read_text())["secrets"]
    assert raw["gateway_tls_cert"]["file"] == "${PP_GATEWAY_TLS_CERT:-./secrets/gateway_tls_cert}"
    assert raw["gateway_tls_key"]["file"] == "${PP_GATEWAY_TLS_KEY:-./secrets/gateway_tls_key}"
    # the links are https, on the port the gateway serves export on
    export = resolved["services"]["export"]["environment"]
    assert export["EXPORT_PUBLIC_BASE_URL"] == f"https://localhost:{PORTS['export']}"
