"""flask clients create|list|rotate|delete (app/cli_clients.py)."""

from __future__ import annotations

import re

from app.extensions import db
from app.models import AuditEvent
from app.services import clients


def invoke(runner, *args):
    """Run a command; the result."""
    return runner.invoke(args=list(args))


def credentials(output: str) -> tuple[str, str]:
    """The client_id and client_secret lines of create/rotate."""
    client_id = re.search(r"^client_id: (\S+)$", output, re.M).group(1)
    secret = re.search(r"^client_secret: (\S+)$", output, re.M).group(1)
    return client_id, secret


def test_create_prints_the_credentials_once_and_they_work(runner, app):
    result = invoke(runner, "clients", "create", "--name", "orders")
    assert result.exit_code == 0, result.output
    client_id, secret = credentials(result.output)
    with app.app_context():
        found, _ = clients.authenticate(client_id, secret)
    assert str(found) == client_id
    listed = invoke(runner, "clients", "list")
    assert listed.exit_code == 0 and "orders" in listed.output and client_id in listed.output
    assert secret not in listed.output and "version 1" in listed.output and "rotated never" in listed.output


def test_rotate_prints_a_new_secret_and_voids_the_old(runner, app):
    client_id, old = credentials(invoke(runner, "clients", "create", "--name", "billing").output)
    result = invoke(runner, "clients", "rotate", "billing")
    assert result.exit_code == 0, result.output
    same_id, new = credentials(result.output)
    assert same_id == client_id and new != old
    with app.app_context():
        clients.authenticate(client_id, new)
    assert "version 2" in invoke(runner, "clients", "list").output


def test_delete_removes_the_client(runner, app):
    invoke(runner, "clients", "create", "--name", "gone")
    result = invoke(runner, "clients", "delete", "gone")
    assert result.exit_code == 0 and "Deleted client gone" in result.output
    assert invoke(runner, "clients", "list").output.strip() == "No clients."


def test_every_change_is_audited(runner, app):
    invoke(runner, "clients", "create", "--name", "audited")
    invoke(runner, "clients", "rotate", "audited")
    invoke(runner, "clients", "delete", "audited")
    with app.app_context():
        events = [e.event for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
    assert events == ["client_created", "client_rotated", "client_deleted"]


def test_errors_are_one_clear_line_and_exit_1(runner):
    invoke(runner, "clients", "create", "--name", "twice")
    for args, message in (
        (("clients", "create", "--name", "twice"), "exists already"),
        (("clients", "create", "--name", ""), "printable"),
        (("clients", "rotate", "nobody"), "No client"),
        (("clients", "delete", "nobody"), "No client"),
    ):
        result = invoke(runner, *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
