"""TLS contexts of the SIP transports: built from the configuration, chosen per peer, and
rebuilt when a renewed certificate is put in place.

Server side: one context for connections from sources that need no client certificate,
and one per trunk with ``tls.verify_client`` (its CA, a certificate required), picked by
the source address before the handshake; ``accepted`` then checks the certificate's
names against the trunk's ``peer_names``. Client side (ansim connecting to a trunk with
``transport: tls``): one context per trunk, verifying the server's certificate against
the trunk's CA (or ``sip.tls.ca``, or the system's) and, with ``server_name``, its name;
ansim presents its own certificate, so a trunk may require mutual TLS of ansim.

Reloading (``reload``, on SIGHUP; ``poll``, once a second with ``sip.tls.watch``, when
the files have changed and then stayed unchanged for ``SETTLE`` seconds) builds every
context anew from the files; only when all of them build is the set replaced. A
certificate and key written one after the other, or a file half copied, fails to build
(key mismatch, PEM error), is logged, and the running contexts stay. New handshakes use
the new contexts; established connections keep the certificate they were made with.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from translate.settings import config_path

from .config import TlsSettings
from .sip.routing import Peer
from .trunks import Trunk, TrunkTable

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds the certificate files must be unchanged before they are loaded


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be loaded."""


@dataclass
class _Contexts:
    server: ssl.SSLContext
    server_by_trunk: dict[str, ssl.SSLContext]
    client: ssl.SSLContext
    client_by_trunk: dict[str, tuple[ssl.SSLContext, str | None]]


def _version(name: str) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if name == "1.3" else ssl.TLSVersion.TLSv1_2


class TlsContexts:
    """Every TLS context of one engine, and their reloading."""

    def __init__(self, settings: TlsSettings, trunks: TrunkTable, folder: str | Path) -> None:
        self.settings = settings
        self.trunks = trunks
        self.folder = Path(folder)
        self.handshake_timeout = settings.handshake_timeout
        self.reloads = 0
        self.reload_failures = 0
        self._stats: dict[str, tuple[float, int, int] | None] = {}
        self._changed_at: float | None = None
        self._contexts = self._build()
        self._stats = self._file_stats()

    # -- building ---------------------------------------------------------------------------
    def _path(self, path: str | None) -> str | None:
        return None if path is None else config_path(self.folder, path)

    def _trunk_ca(self, trunk: Trunk) -> str | None:
        assert trunk.tls is not None
        return self._path(trunk.tls.ca) or self.settings.ca

    def files(self) -> list[str]:
        """Every file the contexts are built from."""
        s = self.settings
        out = [p for p in (s.certificate, s.key, s.ca) if p]
        for trunk in self.trunks.config.trunks:
            if trunk.tls is not None and trunk.tls.ca:
                out.append(self._path(trunk.tls.ca) or "")
        return sorted(set(out))

    def _build(self) -> _Contexts:
        s = self.settings
        try:
            server = self._server(s.verify_client, s.ca)
            server_by_trunk = {
                t.name: self._server(True, self._trunk_ca(t))
                for t in self.trunks.config.trunks
                if t.tls is not None and t.tls.verify_client
            }
            client = self._client(s.ca, True, None)
            client_by_trunk = {
                t.name: (
                    self._client(self._trunk_ca(t), t.tls.verify_server, t.tls.server_name),
                    t.tls.server_name,
                )
                for t in self.trunks.config.trunks
                if t.tls is not None
            }
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsConfigError(str(exc)) from exc
        return _Contexts(server, server_by_trunk, client, client_by_trunk)

    def _server(self, verify: bool, ca: str | None) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _version(s.min_version)
        if s.certificate is None or s.key is None:
            raise ValueError("sip.tls.certificate and sip.tls.key are needed to accept TLS")
        ctx.load_cert_chain(s.certificate, s.key)
        if verify:
            if ca is None:
                raise ValueError("mutual TLS needs a CA file (sip.tls.ca or the trunk's tls.ca)")
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(ca)
        return ctx

    def _client(self, ca: str | None, verify: bool, name: str | None) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = _version(s.min_version)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.check_hostname = name is not None
            if ca is not None:
                ctx.load_verify_locations(ca)
            else:
                ctx.load_default_certs()
        if s.certificate is not None and s.key is not None:
            ctx.load_cert_chain(s.certificate, s.key)  # presented to trunks under mutual TLS
        return ctx

    # -- choosing -----------------------------------------------------------------------------
    def server_context(self, host: str) -> ssl.SSLContext:
        """The context for a connection from ``host``: its trunk's under mutual TLS."""
        contexts = self._contexts
        trunk = self.trunks.trunk_for_source(host)
        if trunk is not None:
            ctx = contexts.server_by_trunk.get(trunk.name)
            if ctx is not None:
                return ctx
        return contexts.server

    def client_context(self, peer: Peer) -> tuple[ssl.SSLContext, str | None]:
        """The context for a connection ansim opens to ``peer``, and the server name to
        verify (None: the chain only)."""
        trunk = self.trunks.trunk_for_address(peer)
        if trunk is not None:
            found = self._contexts.client_by_trunk.get(trunk.name)
            if found is not None:
                return found
        return self._contexts.client, None

    def accepted(self, host: str, peercert: Any) -> bool:
        """Whether the verified client certificate ``peercert`` (``getpeercert()``) is one
        the source's trunk accepts (its ``peer_names``, when it lists any)."""
        trunk = self.trunks.trunk_for_source(host)
        if trunk is None or trunk.tls is None or not trunk.tls.verify_client:
            return True
        names = trunk.tls.peer_names
        if not names:
            return True
        return bool(set(names) & certificate_names(peercert))

    # -- reloading ----------------------------------------------------------------------------
    def _file_stats(self) -> dict[str, tuple[float, int, int] | None]:
        out: dict[str, tuple[float, int, int] | None] = {}
        for path in self.files():
            try:
                st = os.stat(path)
            except OSError:
                out[path] = None
            else:
                out[path] = (st.st_mtime, st.st_size, st.st_ino)
        return out

    def poll(self, now: float) -> bool:
        """Reload when the files changed and have settled; True when reloaded."""
        stats = self._file_stats()
        if stats != self._stats:
            self._stats = stats
            self._changed_at = now
            return False
        if self._changed_at is None or now - self._changed_at < SETTLE:
            return False
        self._changed_at = None
        return self.reload("the certificate files changed")

    def reload(self, why: str = "SIGHUP") -> bool:
        """Build every context anew; keep the running ones if any fails."""
        try:
            contexts = self._build()
        except TlsConfigError as exc:
            self.reload_failures += 1
            log.error(
                "TLS certificate not reloaded (%s): %s; the running certificate stays", why, exc
            )
            return False
        self._contexts = contexts
        self._stats = self._file_stats()
        self.reloads += 1
        self.log_certificate(f"TLS certificate reloaded ({why})")
        return True

    def log_certificate(self, what: str) -> None:
        """Log ``what`` with the subject, serial and expiry of ansim's certificate."""
        path = self.settings.certificate
        if path is None:
            return
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError):
            log.info(what, extra={"certificate": path})
            return
        log.info(
            what,
            extra={
                "certificate": path,
                "subject": cert.subject.rfc4514_string(),
                "serial": f"{cert.serial_number:x}",
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
        )


def certificate_names(peercert: Any) -> set[str]:
    """DNS and URI subjectAltNames and the subject's CNs of a ``getpeercert()`` dict."""
    names: set[str] = set()
    if not isinstance(peercert, dict):
        return names
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.add(value)
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    return names
