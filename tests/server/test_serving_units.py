"""The pieces of `bastion.serving` without a server: redirect targets, secret files, TLS policy."""

from __future__ import annotations

import os
import ssl
import stat
import sys
from pathlib import Path

import pytest

from bastion.serving import bootstrap, process, redirect, tls

pytestmark = pytest.mark.server

PUBLIC = "https://bastion.example:8443"


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/", "", "/"),
        ("/auth/login", "next=%2F", "/auth/login?next=%2F"),
        ("//evil.example/x", "", "//evil.example/x"),  # still under our authority
        ("/a\r\nSet-Cookie: x=1", "", "/a%0D%0ASet-Cookie:%20x=1"),
        ("/\\evil.example", "", "/%5Cevil.example"),
        ("/caf\xc3\xa9", "q=\xff", "/caf%C3%A9?q=%FF"),  # WSGI strings are latin-1 bytes
        ("*", "", "/"),
        ("evil.example", "", "/"),
    ],
)
def test_redirect_target_keeps_the_public_authority(path: str, query: str, expected: str) -> None:
    assert redirect.redirect_target(PUBLIC, path, query) == PUBLIC + expected


def test_redirect_target_caps_the_length() -> None:
    assert redirect.redirect_target(PUBLIC, "/" + "a" * 10_000, "") == PUBLIC + "/"


def test_redirect_app_refuses_a_non_https_public_url() -> None:
    with pytest.raises(ValueError, match="https"):
        redirect.create_app("http://bastion.example")


def test_secret_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        target = tmp_path / "key"
        assert bootstrap.create_secret_file(target, b"first")
        assert not bootstrap.create_secret_file(target, b"second")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left


def test_a_lone_certificate_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("operator's")
    with pytest.raises(bootstrap.BootstrapError, match=r"without key\.pem"):
        bootstrap.ensure_tls_files(tmp_path, {})
    assert (tmp_path / "tls" / "cert.pem").read_text() == "operator's"


def test_a_lone_key_gets_a_certificate(tmp_path: Path) -> None:
    bootstrap.ensure_private_dir(tmp_path / "tls")
    key = tls.new_private_key()
    (tmp_path / "tls" / "key.pem").write_bytes(key)
    files, created = bootstrap.ensure_tls_files(tmp_path, {})
    assert created
    assert files.key.read_bytes() == key


def test_operator_tls_files_must_both_exist(tmp_path: Path) -> None:
    with pytest.raises(bootstrap.BootstrapError, match="both"):
        bootstrap.ensure_tls_files(tmp_path, {"BASTION_TLS_CERT": str(tmp_path / "c")})
    env = {"BASTION_TLS_CERT": str(tmp_path / "c"), "BASTION_TLS_KEY": str(tmp_path / "k")}
    with pytest.raises(bootstrap.BootstrapError, match="does not exist"):
        bootstrap.ensure_tls_files(tmp_path, env)
    assert not (tmp_path / "tls").exists()  # never generated at the operator's paths


def test_hardened_context_allows_only_tls12_plus_and_aead() -> None:
    context = tls.harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    for cipher in context.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["aead"], cipher["name"]
            assert cipher["kea"] == "kx-ecdhe", cipher["name"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_heap_growth_limit_applies_on_glibc() -> None:
    if not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
        pytest.skip("not glibc")
    assert process.limit_heap_growth()


def test_context_cache_reuses_the_context_until_the_files_change(tmp_path: Path) -> None:
    files, _ = bootstrap.ensure_tls_files(tmp_path, {})
    paths = (str(files.cert), str(files.key))
    builds: list[ssl.SSLContext] = []

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*paths)
        builds.append(context)
        return context

    cache = tls.ContextCache()
    first = cache.get(paths, build)
    assert cache.get(paths, build) is first
    assert first.minimum_version is ssl.TLSVersion.TLSv1_2  # hardened
    os.utime(files.cert, ns=(0, 1_000_000_000))  # a renewed certificate
    assert cache.get(paths, build) is not first
    assert len(builds) == 2
