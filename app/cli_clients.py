"""flask clients: create, list, rotate and delete the service clients (app/services/clients.py)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from app.cli import fails_on
from app.services import clients


@click.group("clients")
def clients_group() -> None:
    """Manage the service clients that get tokens at POST /oauth/token and may call /introspect."""


def _show_secret(client, secret: str) -> None:
    """Print the credentials once: nothing keeps the secret but this output."""
    click.echo(f"client_id: {client.id}")
    click.echo(f"client_secret: {secret}")
    click.echo("Store the secret now: it is not kept and cannot be shown again.", err=True)


@clients_group.command("create")
@click.option("--name", required=True, help="A name for the client (unique), e.g. the calling service's.")
@with_appcontext
@fails_on(clients.ClientError)
def clients_create(name: str) -> None:
    """Register a client and print its client_id and client_secret (once)."""
    client, secret = clients.create(name=name)
    _show_secret(client, secret)


@clients_group.command("list")
@with_appcontext
def clients_list() -> None:
    """List the clients: name, client_id, secret version, created, last rotated (never a secret)."""
    found = clients.list_clients()
    if not found:
        click.echo("No clients.")
        return
    for client in found:
        rotated = client.rotated_at.isoformat(timespec="seconds") if client.rotated_at else "never"
        click.echo(
            f"{client.name}\t{client.id}\tversion {client.secret_version}"
            f"\tcreated {client.created_at.isoformat(timespec='seconds')}\trotated {rotated}"
        )


@clients_group.command("rotate")
@click.argument("name")
@with_appcontext
@fails_on(clients.ClientError)
def clients_rotate(name: str) -> None:
    """Give client NAME a new secret; the old secret and every token issued under it stop working at once."""
    client, secret = clients.rotate(name=name)
    _show_secret(client, secret)


@clients_group.command("delete")
@click.argument("name")
@with_appcontext
@fails_on(clients.ClientError)
def clients_delete(name: str) -> None:
    """Remove client NAME; its tokens stop working at once."""
    client = clients.delete(name=name)
    click.echo(f"Deleted client {client.name} ({client.id}); its tokens are void.")
