"""A real SMTP server for the tests (aiosmtpd on a free loopback port), with TLS and AUTH when asked."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import re
import socket
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.extensions import db
from app.services import outbox

TOKEN_IN_LINK = re.compile(r"token=([A-Za-z0-9_\-]+)")


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """The aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        """Nothing received yet."""
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        """Accept and keep the message."""
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        """The messages sent to `address`."""
        return [message for message in self.messages if message["To"] == address]

    def wait(self, count: int, timeout: float = 10) -> list[EmailMessage]:
        """Until `count` messages are in (the server runs on its own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages


def text_of(message: EmailMessage) -> str:
    """The plain-text part."""
    return message.get_body(preferencelist=("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    """The HTML part."""
    return message.get_body(preferencelist=("html",)).get_content()


def token_in(message: EmailMessage) -> str:
    """The token of the link in a mail."""
    match = TOKEN_IN_LINK.search(text_of(message))
    assert match, text_of(message)
    return match.group(1)


class SMTPServer:
    """aiosmtpd on 127.0.0.1:<port>; plain, STARTTLS (required, with AUTH) or implicit TLS."""

    def __init__(self, *, port: int | None = None, mode: str = "plain", cert_dir: Path | None = None,
                 credentials: tuple[str, str] | None = None, inbox: Inbox | None = None) -> None:  # fmt: skip
        """Configure; start() listens. `inbox` is the aiosmtpd handler (a subclass can hold a conversation)."""
        self.port = port or free_port()
        self.mode = mode
        self.inbox = inbox or Inbox()
        self.credentials = credentials
        self.logins: list[str] = []
        self.cert_file = None
        kwargs: dict = {}
        if mode in ("starttls", "tls"):
            self.cert_file, key_file = self_signed_cert(cert_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_file, key_file)
            if mode == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                # aiosmtpd does not see implicit TLS as TLS when deciding to offer AUTH; it is TLS.
                kwargs.update(ssl_context=context, auth_require_tls=False)
        if credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        """Accept exactly the configured user and password."""
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def url(self, scheme: str = "smtp+plain", userinfo: str = "") -> str:
        """A MAIL_URL for this server."""
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> SMTPServer:
        """Listen (returns once the server answers)."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self.controller.stop()


def self_signed_cert(folder: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, signed by itself; returns (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def deliver(app) -> int:
    """Run the outbox until nothing is due; return how many messages were claimed."""
    total = 0
    with app.app_context():
        while claimed := outbox.run_once():
            total += claimed
        db.session.remove()
    return total
