"""flask commands: create-admin, purge-tokens, purge-audit, keys, mfa, outbox, users, dev-cert."""

from __future__ import annotations

import datetime as dt
import functools
import io
import ipaddress
import os
import stat
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from marshmallow import Schema, ValidationError

from app.errors import AppError
from app.schemas.fields import Email, Password, Text
from app.services import audit, imports, keys, mfa, outbox, recovery, sessions, throttle, users

P = ParamSpec("P")
R = TypeVar("R")


class AdminInput(Schema):
    """What create-admin accepts, checked like the HTTP input."""

    email = Email(required=True)
    password = Password(allow_none=True)
    name = Text(max_length=100, allow_none=True)


def _fail(message: str) -> None:
    """Stop with a clear message and exit status 1."""
    raise click.ClickException(message)


def fails_on(*errors: type[Exception]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A command whose `errors` (the service's refusals) end it as a failure: the message, exit status 1."""

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return command(*args, **kwargs)
            except errors as error:
                raise click.ClickException(str(error)) from None

        return run

    return decorate


@click.command("create-admin")
@with_appcontext
@click.option("--email", required=True, help="The admin's email address.")
@click.option("--password", default=None, help="The password; prompted for (hidden) when omitted.")
@click.option("--name", default=None, help="Display name (default: the email's local part).")
def create_admin(email: str, password: str | None, name: str | None) -> None:
    """Create an admin, or promote an existing user to admin."""
    try:
        data = AdminInput().load({"email": email, "password": password, "name": name})
    except ValidationError as error:
        messages = error.normalized_messages()
        _fail("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in messages.items()))
    if data.get("password") is None and users.find_admin_candidate(data["email"]) is None:
        data["password"] = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user, created = users.create_or_promote_admin(
            email=data["email"], password=data.get("password"), name=data.get("name")
        )
    except AppError as error:
        details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in (error.errors or {}).items())
        _fail(f"{error.detail} {details}".strip())
    click.echo(f"{'Created' if created else 'Promoted'} admin {user.email} ({user.id}).")


@click.command("purge-tokens")
@with_appcontext
def purge_tokens() -> None:
    """Delete revocation records and sessions whose tokens have expired anyway, and stale throttle counts."""
    revoked, expired_sessions = sessions.purge_expired()
    counts = throttle.purge_expired()
    mailed = recovery.purge_expired()
    sent = outbox.purge_sent()
    challenges = mfa.purge_expired()
    click.echo(
        f"Purged {revoked} revocation record(s), {expired_sessions} expired session(s),"
        f" {counts} stale throttle count(s), {mailed} expired mailed token(s), {sent} delivered outbox message(s)"
        f" and {challenges} expired MFA login challenge(s)."
    )


@click.command("purge-audit")
@click.option("--older-than", "days", type=click.IntRange(min=1), required=True, help="Age in days.")
@with_appcontext
def purge_audit(days: int) -> None:
    """Delete audit events older than DAYS days."""
    deleted = audit.purge(older_than_days=days)
    click.echo(f"Purged {deleted} audit event(s) older than {days} day(s).")


@click.group("keys")
def keys_group() -> None:
    """Manage the signing keys of ES256 / EdDSA / RS256 (JWT_ALGORITHM, JWT_KEYS_DIR)."""


def _keys_dir() -> Path:
    """The configured key directory."""
    return Path(current_app.config["JWT_KEYS_DIR"])


@keys_group.command("generate")
@click.option("--algorithm", default=None, help="ES256, EdDSA or RS256 (default: JWT_ALGORITHM).")
@click.option("--force", is_flag=True, help="Start over even if keys exist (every issued token dies).")
@with_appcontext
@fails_on(keys.KeyError_)
def keys_generate(algorithm: str | None, force: bool) -> None:
    """Create the key directory with its first key."""
    algorithm = algorithm or current_app.config["JWT_ALGORITHM"]
    kid = keys.generate(_keys_dir(), algorithm, force=force)
    click.echo(f"Generated {algorithm} key {kid} in {_keys_dir()}. Restart the service to use it.")


@keys_group.command("rotate")
@with_appcontext
@fails_on(keys.KeyError_)
def keys_rotate() -> None:
    """Make a new current key; the previous one keeps verifying until pruned."""
    old, new = keys.rotate(_keys_dir(), algorithm=current_app.config["JWT_ALGORITHM"])
    click.echo(f"Key {new} is now current; {old} is retired and still verifies. Restart or reload the service.")


@keys_group.command("prune")
@with_appcontext
@fails_on(keys.KeyError_)
def keys_prune() -> None:
    """Delete retired keys that no live token can have been signed with."""
    lifetime = max(current_app.config["JWT_REFRESH_TOKEN_EXPIRES"], current_app.config["JWT_ACCESS_TOKEN_EXPIRES"])
    removed = keys.prune(_keys_dir(), max_token_lifetime=lifetime)
    click.echo(f"Removed {len(removed)} retired key(s){': ' + ', '.join(removed) if removed else ''}.")


@keys_group.command("list")
@with_appcontext
@fails_on(keys.KeyError_)
def keys_list() -> None:
    """Show the keys, the current one marked."""
    for entry in keys.describe(_keys_dir()):
        state = "current" if entry["current"] else f"retired {entry['retired_at']}"
        click.echo(f"{entry['kid']}  created {entry['created_at']}  {state}")


@click.group("outbox")
def outbox_group() -> None:
    """Deliver the outbox (mail, and events when EVENTS_AMQP_URL is set) and look after it."""


@outbox_group.command("run")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=0,
    envvar="OUTBOX_METRICS_PORT",
    show_default=True,
    help="Serve Prometheus metrics on this port (0: off).",
)
@with_appcontext
def outbox_run(once: bool, metrics_port: int) -> None:
    """Deliver outbox messages until SIGTERM or SIGINT (several workers may run at once).

    With EVENTS_AMQP_URL, the events relay runs beside mail delivery (app/services/relay.py).
    """
    import signal
    import threading

    from app.services import relay

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if once:
        with app.app_context():
            while outbox.run_once():
                pass
        if app.config["EVENTS_AMQP_URL"]:
            relay.run(app, threading.Event(), until_idle=True)
        return
    if metrics_port:
        from prometheus_client import REGISTRY, start_http_server

        REGISTRY.register(outbox.BacklogCollector(app))
        start_http_server(metrics_port)
    stop = threading.Event()

    def _stop(signum, _frame) -> None:
        """Finish the message in hand, give back the rest of the batch, exit."""
        app.logger.info("outbox worker: %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo("outbox worker: delivering (SIGTERM stops)", err=True)
    relay_thread = relay.start(app, stop)
    if relay_thread is not None:
        click.echo(f"outbox worker: publishing events to {app.config['EVENTS_EXCHANGE']}", err=True)
    outbox.run(app, stop)
    if relay_thread is not None:
        relay_thread.join()
    click.echo("outbox worker: stopped", err=True)


@outbox_group.command("status")
@with_appcontext
def outbox_status() -> None:
    """Show the backlog: pending, dead, delivered, and the age of the oldest pending message."""
    backlog = outbox.status()
    age = f"{backlog.oldest_pending_age:.0f}s" if backlog.oldest_pending_age is not None else "-"
    click.echo(f"pending {backlog.pending}  dead {backlog.dead}  sent {backlog.sent}  oldest pending {age}")
    if current_app.config["EVENTS_AMQP_URL"]:
        from app.services import relay

        waiting, lag = relay.lag()
        click.echo(f"events pending {waiting}  lag {f'{lag:.0f}s' if lag is not None else '-'}")


@outbox_group.command("retry")
@click.option("--id", "message_id", type=int, default=None, help="Only this message (default: every dead one).")
@with_appcontext
def outbox_retry(message_id: int | None) -> None:
    """Make dead messages pending again, with a fresh count of attempts."""
    count = outbox.retry_dead(message_id=message_id)
    click.echo(f"{count} dead message(s) pending again.")


@click.group("mfa")
def mfa_group() -> None:
    """The second factor's encryption key (ENCRYPTION_KEY): make one, move every secret onto the first."""


@mfa_group.command("generate-key")
def mfa_generate_key() -> None:
    """Print a new ENCRYPTION_KEY key (put it first in ENCRYPTION_KEY to rotate; see docs/OPERATIONS.md)."""
    from config import new_encryption_key

    click.echo(new_encryption_key())


@mfa_group.command("reencrypt")
@with_appcontext
def mfa_reencrypt() -> None:
    """Re-encrypt every TOTP secret with the first ENCRYPTION_KEY key; then older keys can be dropped."""
    try:
        count = mfa.reencrypt_all()
    except AppError as error:
        _fail(f"{error.detail} Nothing was changed; put the missing key back in ENCRYPTION_KEY.")
    click.echo(f"Re-encrypted {count} TOTP secret(s) with the first ENCRYPTION_KEY key; older keys can be removed.")


@click.group("users")
def users_group() -> None:
    """Move users in from another service, or out: JSON Lines, one user a line (docs/OPERATIONS.md)."""


@users_group.command("import")
@click.argument("source", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check every line and report; write nothing.")
@click.option(
    "--on-conflict",
    type=click.Choice(imports.CONFLICT_MODES),
    default="fail",
    show_default=True,
    help="A line whose email is already an account: leave the account, update it, or fail the line.",
)
@click.option("--allow-reserved", is_flag=True, help="Allow RESERVED_USERNAMES, as an admin may assign them.")
@click.option(
    "--batch-size", type=click.IntRange(min=1, max=10000), default=imports.DEFAULT_BATCH_SIZE, show_default=True
)
@with_appcontext
def users_import(source, dry_run: bool, on_conflict: str, allow_reserved: bool, batch_size: int) -> None:
    """Import users with their password hashes from SOURCE (JSON Lines; - for standard input)."""
    settings = {"on_conflict": on_conflict, "dry_run": dry_run, "allow_reserved": allow_reserved}
    report = lambda problem: click.echo(str(problem), err=True)  # noqa: E731
    try:
        if not sys.stderr.isatty():
            summary = imports.import_users(source, batch_size=batch_size, report=report, **settings)
        else:
            with _progress(source) as lines:
                summary = imports.import_users(lines, batch_size=batch_size, report=_above(report), **settings)
    except imports.ImportInterrupted as stopped:
        for name, count in stopped.summary.counts().items():
            click.echo(f"{name} {count}")
        _fail(
            f"The import stopped: {stopped.reason}. The batches counted above are in; "
            "run the same command with --on-conflict skip to finish."
        )
    for name, count in summary.counts().items():
        click.echo(f"{name} {count}")
    if dry_run:
        click.echo("dry run: nothing was written", err=True)
    if summary.failed:
        click.get_current_context().exit(1)


@users_group.command("export")
@click.argument("target", type=click.Path(dir_okay=False, allow_dash=True), default="-")
@click.option("--with-hashes", is_flag=True, help="Include the password hashes (the file is then made 0600).")
@with_appcontext
def users_export(target: str, with_hashes: bool) -> None:
    """Export every user to TARGET (JSON Lines, the import's format; - or nothing for standard output)."""
    records = imports.export_users(with_hashes=with_hashes)
    count = 0
    if target == "-":
        for count, line in enumerate(records, start=1):  # noqa: B007
            click.echo(line)
    else:
        with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            for count, line in enumerate(records, start=1):  # noqa: B007
                out.write(line + b"\n")
    click.echo(f"users.exported {count}", err=True)


def _above(report):
    """`report`, on a line of its own above the progress bar (the bar redraws on its next step)."""

    def wrapped(problem) -> None:
        click.echo("\r\033[K", nl=False, err=True)
        report(problem)

    return wrapped


@contextmanager
def _progress(source):
    """The source's lines with a progress bar on standard error: by bytes for a file, by lines for a pipe."""
    try:
        status = os.fstat(source.fileno())
        size = status.st_size if stat.S_ISREG(status.st_mode) else 0
    except (OSError, ValueError, io.UnsupportedOperation):
        size = 0
    if not size:
        with click.progressbar(source, label="importing", file=sys.stderr, show_pos=True) as bar:
            yield bar
        return
    with click.progressbar(length=size, label="importing", file=sys.stderr) as bar:

        def lines():
            for raw in source:
                yield raw
                bar.update(len(raw))

        yield lines()


@click.command("dev-cert")
@click.option("--out", "out_dir", default="instance/certs", show_default=True, help="Folder for cert.pem and key.pem.")
@click.option("--force", is_flag=True, help="Replace an existing certificate.")
def dev_cert(out_dir: str, force: bool) -> None:
    """Make a self-signed certificate for localhost (development only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(out_dir)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and key_path.exists() and not force:
        click.echo(f"Using the existing certificate in {folder}.")
        return
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    click.echo(f"Wrote {cert_path} and {key_path} (self-signed, for localhost).")


def register_commands(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    from app.cli_clients import clients_group

    commands = (
        create_admin, purge_tokens, purge_audit, keys_group, mfa_group, outbox_group, users_group, dev_cert,
        clients_group,
    )  # fmt: skip
    for command in commands:
        app.cli.add_command(command)
