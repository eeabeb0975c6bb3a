"""A small HTTPS client for the bench: keep-alive connections, cookies, the CSRF token, sign-in."""

from __future__ import annotations

import http.client
import re
import ssl
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from bench.servers import LOOPBACK

SESSION_COOKIE = "__Host-session"
_CSRF_INPUT = re.compile(r"<input[^>]*\bname=\"csrf_token\"[^>]*>")
_VALUE = re.compile(r"\bvalue=\"([^\"]*)\"")


class ClientError(RuntimeError):
    """The server did not answer as a browser would expect."""


def csrf_token(html: str) -> str:
    """The value of the ``csrf_token`` hidden input in `html`."""
    tag = _CSRF_INPUT.search(html)
    value = _VALUE.search(tag.group(0)) if tag else None
    if value is None:
        raise ClientError("no csrf_token input on the page")
    return value.group(1)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float


@dataclass
class Client:
    """One keep-alive HTTPS connection with a cookie jar, optionally from a source address."""

    port: int
    context: ssl.SSLContext
    source: str | None = None
    timeout: float = 30.0
    cookies: dict[str, str] = field(default_factory=dict)
    _conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                LOOPBACK,
                self.port,
                context=self.context,
                timeout=self.timeout,
                source_address=(self.source, 0) if self.source else None,
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Answer:
        headers = {}
        body = None
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = self._connection()
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        seconds = time.perf_counter() - started
        for raw in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        if response.will_close:
            self.close()
        return Answer(response.status, response.headers, data, seconds)

    def login_form(self) -> str:
        """GET the login page; return its CSRF token (the anonymous session cookie is kept)."""
        page = self.request("GET", "/auth/login")
        if page.status != 200:
            raise ClientError(f"GET /auth/login answered {page.status}")
        return csrf_token(page.body.decode("utf-8", "replace"))

    def login(self, email: str, password: str) -> Answer:
        """Sign in as a browser would: GET the form, POST it with the token and cookie."""
        token = self.login_form()
        return self.request(
            "POST",
            "/auth/login",
            form={"email": email, "password": password, "csrf_token": token},
        )


def sign_in(port: int, context: ssl.SSLContext, email: str, password: str) -> str:
    """Sign in and return the ``__Host-session`` cookie value of the signed-in session."""
    client = Client(port, context)
    try:
        answer = client.login(email, password)
        if answer.status != 303 or SESSION_COOKIE not in client.cookies:
            raise ClientError(f"sign-in answered {answer.status}, not 303 with a session")
        home = client.request("GET", "/")
        if home.status != 200:
            raise ClientError(f"the signed-in home page answered {home.status}")
        return client.cookies[SESSION_COOKIE]
    finally:
        client.close()
