"""Mail: render a message from templates (plain text and HTML), and send it over SMTP.

Transports, chosen by MAIL_URL:
- `smtp://user:pass@host:587`: STARTTLS is required; a server that does not offer it is refused,
  so credentials and reset links never cross the network in clear (ASVS 9.2.1).
- `smtps://user:pass@host:465`: TLS from the first byte (RFC 8314 prefers it).
- `smtp+plain://host:25`: no TLS, for a relay on the loopback interface (and tests) only.
- `console`: written to the log, for development (production refuses it: links are credentials).

Certificates are verified against the system's CAs, or MAIL_TLS_CA_FILE. The sending itself is
the outbox worker's job (app/services/outbox.py); nothing here touches the database.
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import current_app
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

log = logging.getLogger(__name__)

TEMPLATES = (
    "password_reset",
    "email_verify",
    "email_change_confirm",
    "email_change_requested",
    "email_changed",
    "password_changed",
)


class MailError(Exception):
    """A message could not be handed to the mail server; the outbox retries it later."""


class MailRefused(MailError):
    """The transport is not safe to use as configured (no STARTTLS, a non-loopback plain host)."""


@dataclass(frozen=True)
class Transport:
    """A parsed MAIL_URL."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        """Never the password."""
        return f"Transport({self.scheme}://{self.host}:{self.port})"


DEFAULT_PORTS = {"smtp": 587, "smtps": 465, "smtp+plain": 25}


def parse_url(url: str) -> Transport:
    """Split MAIL_URL into scheme, host, port and the AUTH credentials of its userinfo."""
    if url == "console":
        return Transport("console", "", 0, None, None)
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise MailRefused(f"unsupported MAIL_URL scheme {parts.scheme!r}")
    return Transport(
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def available() -> bool:
    """Whether mail can be sent at all (MAIL_URL set)."""
    return current_app.config["MAIL_URL"] is not None


def _environment() -> Environment:
    """The app's Jinja environment for mails: MAIL_TEMPLATES_DIR first, the shipped templates after."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    env: Environment | None = app.extensions.get("mail_templates")
    if env is None:
        loaders: list[BaseLoader] = [PackageLoader("app", "templates/mail")]
        if app.config["MAIL_TEMPLATES_DIR"]:
            loaders.insert(0, FileSystemLoader(app.config["MAIL_TEMPLATES_DIR"]))
        env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        app.extensions["mail_templates"] = env
    return env


def render(template: str, *, to: str, context: dict[str, Any], message_id: str | None = None) -> EmailMessage:
    """Build the message: subject, a plain-text part and an HTML alternative, from the templates."""
    env = _environment()
    values = {**context, "to": to}
    message = EmailMessage()
    message["Subject"] = env.get_template(f"{template}.subject.txt").render(values).strip()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # Kept across retries (the outbox stores it) so a mail delivered twice can be told a duplicate.
    message["Message-ID"] = message_id or make_msgid(domain=_sender_domain())
    # RFC 3834: machine-generated; auto-responders must not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(env.get_template(f"{template}.txt").render(values))
    message.add_alternative(env.get_template(f"{template}.html").render(values), subtype="html")
    return message


def _sender_domain() -> str:
    """The domain of MAIL_FROM, for Message-IDs."""
    return current_app.config["MAIL_FROM"].rpartition("@")[2] or "localhost"


def new_message_id() -> str:
    """A Message-ID for a mail about to be written to the outbox."""
    return make_msgid(domain=_sender_domain())


def send(message: EmailMessage) -> None:
    """Hand the message to the configured server. Raises MailError (the outbox retries)."""
    config = current_app.config
    if config["MAIL_URL"] is None:
        raise MailError("MAIL_URL is not set")
    transport = parse_url(config["MAIL_URL"])
    if transport.scheme == "console":
        log.info("mail (console transport, development only)\n%s", message.as_string())
        return
    try:
        _send_smtp(transport, message, timeout=config["MAIL_TIMEOUT"], cafile=config["MAIL_TLS_CA_FILE"])
    except MailError:
        raise
    except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
        raise MailError(f"{type(error).__name__}: {error}") from error


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    """Verify the server's certificate and name (TLS 1.2 at least)."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _is_loopback(host: str) -> bool:
    """Whether a host is this machine: localhost or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _send_smtp(transport: Transport, message: EmailMessage, *, timeout: int, cafile: str | None) -> None:
    """One SMTP session: connect, secure it, authenticate, send, quit."""
    if transport.scheme == "smtp+plain" and not _is_loopback(transport.host):
        raise MailRefused(f"smtp+plain:// sends in clear: only to a loopback host, not {transport.host}")
    if transport.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            transport.host, transport.port, timeout=timeout, context=_tls_context(cafile)
        )
    else:
        client = smtplib.SMTP(transport.host, transport.port, timeout=timeout)
    with client:
        client.ehlo()
        if transport.scheme == "smtp":
            if not client.has_extn("starttls"):
                # No silent downgrade to clear text (a stripped STARTTLS is the classic attack).
                raise MailRefused(f"{transport.host} does not offer STARTTLS; refusing to send in clear")
            client.starttls(context=_tls_context(cafile))
            client.ehlo()
        if transport.username:
            client.login(transport.username, transport.password or "")
        client.send_message(message)
