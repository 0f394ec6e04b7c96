"""Where an outgoing webhook may be sent, and a connection that goes only where was checked.

A webhook URL is chosen by a customer, so a POST to it is a request our servers make on their
behalf: pointed at ``127.0.0.1``, ``10.0.0.5`` or ``169.254.169.254`` it would reach services
that only trust our own network (server-side request forgery). So ``check_url``:

- in production (``MARKET_ENV=production``) accepts only ``https``, resolves the host and
  refuses it if *any* of its addresses is not a global unicast address (loopback, private,
  link-local, shared, reserved, multicast; an IPv4-mapped IPv6 address is judged as its IPv4);
- elsewhere (development, test) accepts ``https`` to any host and plain ``http`` only to a
  loopback receiver (``localhost``, ``127.0.0.0/8``, ``::1``), so a local receiver works;
- never accepts credentials in the URL.

The check is made when the URL is set and again at every delivery, and ``post`` connects to
the very address that was checked (TLS still verifies the certificate against the host name):
a DNS answer that changes between the check and the connection (DNS rebinding) cannot redirect
the request. Redirects are never followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlsplit

from market.core.errors import InvalidInput

Resolver = Callable[[str, int], list[str]]
MAX_URL_LENGTH = 500
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of an answer: only its status matters


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # with the query
    addresses: tuple[str, ...]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_production(settings: Mapping) -> bool:
    return settings.get("MARKET_ENV") == "production"


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope id (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_url(url: str, *, production: bool, resolver: Resolver | None = None,
              field: str = "url") -> WebhookTarget:
    """The target of a webhook URL, or ``InvalidInput`` naming ``field`` (rules above)."""
    url = (url or "").strip()
    if not url:
        raise InvalidInput("Give the webhook's URL.", field=field)
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"At most {MAX_URL_LENGTH} characters.", field=field)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InvalidInput("A webhook URL starts with https://.", field=field)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("A webhook URL carries no user name or password; the signature "
                           "authenticates the alert.", field=field)
    host = parts.hostname
    if not host:
        raise InvalidInput("The webhook URL has no host.", field=field)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("The webhook URL's port is not a port number.", field=field) from None
    if production and scheme != "https":
        raise InvalidInput("A webhook URL must use https://.", field=field)
    try:
        addresses = (resolver or resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"The host {host} cannot be resolved ({exc}).", field=field) from None
    if not addresses:
        raise InvalidInput(f"The host {host} has no address.", field=field)
    for address in addresses:
        ip = _ip(address)
        if production and (not ip.is_global or ip.is_multicast):
            raise InvalidInput(f"{host} resolves to {ip}, a private, loopback or reserved "
                               "address: webhooks are sent to public addresses only.",
                               field=field)
        if not production and scheme == "http" and not ip.is_loopback:
            raise InvalidInput("Plain http:// is accepted only for a receiver on this machine "
                               "(localhost, 127.0.0.1, ::1); use https://.", field=field)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return WebhookTarget(url=url, scheme=scheme, host=host, port=port, path=path,
                         addresses=tuple(addresses))


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header still names the host."""

    def __init__(self, target: WebhookTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.addresses[0]

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one checked address, the certificate verified against the host name."""

    def __init__(self, target: WebhookTarget, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.addresses[0]

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(target: WebhookTarget, body: bytes, headers: Mapping[str, str], *, timeout: float,
         ssl_context: ssl.SSLContext | None = None) -> int:
    """POST ``body`` to the checked target; its HTTP status (redirects are not followed)."""
    if target.scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
            target, timeout, ssl_context or ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        connection.close()
