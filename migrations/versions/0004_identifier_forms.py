"""Stored emails in the normalized form of the look-alike rules (IDNA A-label domains).

Revision ID: 0004_identifier_forms
Revises: 0003_login_throttle
Create Date: 2026-11-28

Until now an email was stored lower-cased only, so `x@bücher.example` sat in the U-label form
while lookups now normalize to the A-label `x@xn--bcher-kva.example`: such an account could no
longer sign in by email, and a twin could sign up. Only rows with non-ASCII characters can
change. Usernames were ASCII only (the old pattern), and the RFC 8265 key of an ASCII name is
its lower-cased form, so no username_key changes; rows with a non-ASCII username (none can have
been made through the API) are recomputed anyway.

The rules are copied here, frozen, not imported: a migration must do the same thing forever.
Two accounts whose emails become equal are look-alike twins; the upgrade stops and names them
rather than choose, and an operator resolves them (docs/OPERATIONS.md). A row whose email does
not normalize (an invalid domain) is left as it is.
"""

import unicodedata

import idna
import precis_i18n
import sqlalchemy as sa
from alembic import op

revision = "0004_identifier_forms"
down_revision = "0003_login_throttle"
branch_labels = None
depends_on = None

users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String(254)),
    sa.column("username", sa.String(32)),
    sa.column("username_key", sa.String(32)),
)


def _width_mapped(text):
    """Fullwidth and halfwidth forms to their ordinary twins (RFC 8264 9.1)."""
    return "".join(
        unicodedata.normalize("NFKC", ch) if unicodedata.decomposition(ch).startswith(("<wide>", "<narrow>")) else ch
        for ch in text
    )


def _email(stored):
    """The normalized form of a stored email, or None when it does not normalize."""
    local, _, domain = stored.rpartition("@")
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    normalized = f"{unicodedata.normalize('NFC', _width_mapped(local)).lower()}@{domain}"
    return normalized if len(normalized) <= 254 else None


def _username_key(username):
    """RFC 8265 UsernameCaseMapped, or the old lower-cased key when the name does not map."""
    try:
        return precis_i18n.get_profile("UsernameCaseMapped").enforce(username)
    except ValueError:
        return username.lower()


def upgrade():
    """Rewrite non-ASCII emails (and keys of non-ASCII usernames) to their normalized forms."""
    connection = op.get_bind()
    rows = connection.execute(sa.select(users.c.id, users.c.email, users.c.username)).all()
    taken = {row.email: row.id for row in rows}
    for row in rows:
        if row.email.isascii():
            continue
        normalized = _email(row.email)
        if normalized is None or normalized == row.email:
            continue
        holder = taken.get(normalized)
        if holder is not None and holder != row.id:
            raise RuntimeError(
                f"users {row.id} and {holder} have the same email once normalized ({normalized!r}); "
                "change or delete one of them, then run the upgrade again"
            )
        taken[normalized] = row.id
        connection.execute(sa.update(users).where(users.c.id == row.id).values(email=normalized))
    for row in rows:
        if row.username is not None and not row.username.isascii():
            key = _username_key(row.username)
            connection.execute(sa.update(users).where(users.c.id == row.id).values(username_key=key))


def downgrade():
    """Nothing to undo: the normalized forms are valid under the old rules too (the original
    spelling is not kept, and is not needed to sign in)."""
