"""The response headers graded by Mozilla's HTTP Observatory, run locally (standards-notes F12).

The MDN scanner (npm `@mdn/mdn-http-observatory`, pinned in tests/observatory and installed
by `make observatory` with scripts ignored) scans the production server (gunicorn + TLS +
plain-HTTP redirector) on 127.0.0.1. The server's certificate comes from a throwaway CA
made here, which node trusts through NODE_EXTRA_CA_CERTS. Nothing leaves the machine: the
package's postinstall download of Chromium's HSTS preload list is replaced by an empty
stub (127.0.0.1 is on no preload list anyway), and every request the scanner makes goes to
the server under test.

The legacy Python scanner `httpobs` (0.9.3, the last release) is the second opinion when it
can be installed; see HTTPOBS_UNAVAILABLE for why it is skipped otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.server.conftest import (
    BIN,
    LOOPBACK,
    Process,
    clean_env,
    free_port,
    spawn,
    wait_for_https,
)

pytestmark = pytest.mark.server

OBSERVATORY = Path(__file__).resolve().parents[1] / "observatory"
MDN_PACKAGE = OBSERVATORY / "node_modules" / "@mdn" / "mdn-http-observatory"
PAGE = "/auth/login"  # a page answered 200, not a redirect
SCAN_SECONDS = 60

HTTPOBS_UNAVAILABLE = (
    "httpobs 0.9.3 (its last release) can't be installed next to Bastion: it pins Flask==1.0.2,"
    " Werkzeug==0.14.1, click==7.0, MarkupSafe==1.1.0 and requests==2.27.1 (pip-compile:"
    " ResolutionImpossible against requirements.lock), imports celery 4.2 in its retriever,"
    " and its psycopg2<2.8 and uWSGI==2.0.17.1 pins don't build on Python 3.11"
)

# scan() of the pinned release ignores its options (it calls retrieve(hostname) without
# them), so the scanner would always fetch http://host/ and https://host/ on ports 80/443.
# The driver points the retriever's two sessions at our ports and page by wrapping
# Session.fromUrl; everything else (the tests, scoring and grade) is the package's own code.
DRIVER = """
import { Session } from "@mdn/mdn-http-observatory/src/retriever/session.js";
import { scan } from "@mdn/mdn-http-observatory/src/scanner/index.js";

const [host, httpsPort, httpPort, path] = process.argv.slice(1);
const fromUrl = Session.fromUrl.bind(Session);
Session.fromUrl = (url, options) => {
  const target = new URL(url);
  target.port = target.protocol === "https:" ? httpsPort : httpPort;
  target.pathname = path;
  return fromUrl(target, options);
};
const result = await scan(host);
const tests = Object.fromEntries(
  Object.entries(result.tests).map(([name, test]) => [
    name,
    { pass: test.pass, result: test.result, scoreModifier: test.scoreModifier },
  ])
);
console.log(JSON.stringify({ scan: result.scan, tests }));
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_throwaway_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost: (ca.pem, cert.pem, key.pem)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Bastion observatory test CA"))
        .issuer_name(_name("Bastion observatory test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(LOOPBACK))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TrustedServer:
    """`bastion serve` in production mode with a certificate issued by a throwaway CA."""

    def __init__(self, workdir: Path) -> None:
        self.cafile, cert, key = write_throwaway_pki(workdir)
        self.port, self.http_port = free_port(), free_port()
        env = clean_env(
            workdir / "instance",
            BASTION_PORT=str(self.port),
            BASTION_HTTP_PORT=str(self.http_port),
            BASTION_PUBLIC_URL=f"https://{LOOPBACK}:{self.port}",
            BASTION_TLS_CERT=str(cert),
            BASTION_TLS_KEY=str(key),
        )
        self.process: Process = spawn([str(BIN / "bastion"), "serve"], env, workdir, "serve")
        wait_for_https(self.process, self.port, self.cafile)


@pytest.fixture(scope="module")
def trusted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustedServer]:
    running = TrustedServer(tmp_path_factory.mktemp("observatory"))
    try:
        yield running
    finally:
        running.process.stop()


def failing(tests: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: str(test.get("result")) for name, test in tests.items() if not test.get("pass")}


def test_mdn_observatory_grades_a_plus(trusted_server: TrustedServer) -> None:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.skip("node/npm not on PATH: the MDN HTTP Observatory scanner is a node package")
    assert MDN_PACKAGE.is_dir(), "the MDN scanner is not installed: run `make observatory`"
    # The preload list the postinstall script would download; an empty stub keeps it offline.
    preload = MDN_PACKAGE / "conf" / "hsts-preload.json"
    if not preload.exists():
        preload.write_text("{}\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NODE_", "HTTP_PROXY", "HTTPS_PROXY"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env["NODE_EXTRA_CA_CERTS"] = str(trusted_server.cafile)
    completed = subprocess.run(
        [
            node,
            "--input-type=module",
            "--eval",
            DRIVER,
            LOOPBACK,
            str(trusted_server.port),
            str(trusted_server.http_port),
            PAGE,
        ],
        cwd=OBSERVATORY,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SCAN_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    summary, tests = report["scan"], report["tests"]
    assert summary["statusCode"] == 200, summary
    problems = failing(tests)
    assert summary["grade"] == "A+", (summary["grade"], summary["score"], problems)
    assert summary["score"] >= 100, (summary["score"], problems)
    assert not problems, problems
    # The redirection test really followed our redirector to HTTPS, not a missing listener.
    assert tests["redirection"]["result"] == "redirection-to-https", tests["redirection"]


def test_legacy_httpobs_grades_a_plus(trusted_server: TrustedServer) -> None:
    try:
        from httpobs.scanner.local import scan  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip(HTTPOBS_UNAVAILABLE)
    result = scan(
        LOOPBACK,
        http_port=trusted_server.http_port,
        https_port=trusted_server.port,
        path=PAGE,
        verify=str(trusted_server.cafile),
    )
    assert "error" not in result, result
    summary, tests = result["scan"], result["tests"]
    problems = failing(tests)
    assert summary["grade"] == "A+", (summary["grade"], summary["score"], problems)
    assert summary["score"] >= 100, (summary["score"], problems)
