"""Users from an existing service: import them from JSON Lines with their password hashes, export them.

The import (`flask users import`) validates every line with signup's rules (app/schemas/imports.py
reuses the identifier fields; reserved usernames are refused unless the operator allows them, as
an admin may), accepts the hash formats of app/services/hashformats.py, and computes no hash:
each account keeps the hash it brought until its first login upgrades it to argon2id. An
account without a hash gets the unusable marker and must reset its password.

Lines are taken in batches, each batch one transaction: a crash loses at most the batch in hand,
and a rerun with `on_conflict="skip"` passes over what is already in and finishes. A bad line is
reported with its number and nothing of it is written; the others go on. A line whose email is
already an account (in the database or earlier in the file) is a conflict: skipped, updated
(only the fields the line gives), or failed. A username held by another account is always a
failed line: that is another person, whom neither skipping nor updating would bring in.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from marshmallow import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.errors import AppError, EmailTaken, UsernameTaken
from app.extensions import db
from app.models import User, utcnow
from app.models.user import ADMIN
from app.schemas.imports import UserRecordSchema
from app.services import audit, events, hashformats, passwords, sessions, users

CONFLICT_MODES = ("skip", "update", "fail")
MAX_LINE_BYTES = 64 * 1024
DEFAULT_BATCH_SIZE = 1000
UPDATABLE = ("username", "name", "role", "is_active", "email_verified", "created_at", "password_hash")

_schema = UserRecordSchema()


@dataclass(frozen=True)
class LineProblem:
    """Why one line imported nothing: a stable code and the messages per field."""

    line: int
    code: str
    errors: dict[str, list[str]]

    @classmethod
    def of(cls, line: int, error: AppError) -> LineProblem:
        """The problem a service error makes of a line."""
        return cls(line, error.code, error.errors or {"line": [error.detail]})

    def __str__(self) -> str:
        """`line 7: email_taken: email: An account with this email already exists.`"""
        details = "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in self.errors.items())
        return f"line {self.line}: {self.code}: {details}"


@dataclass
class ImportSummary:
    """What an import did (or, dry, would do)."""

    imported: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        """The summary's counts under their stable names."""
        return {
            "users.imported": self.imported,
            "users.updated": self.updated,
            "users.skipped": self.skipped,
            "users.failed": self.failed,
        }


class ImportInterrupted(Exception):
    """The import stopped before its end (a database failure, Ctrl-C); `summary` counts what was committed."""

    def __init__(self, summary: ImportSummary, cause: BaseException) -> None:
        """Keep the summary and say what stopped it."""
        reason = "interrupted" if isinstance(cause, KeyboardInterrupt) else f"database error ({type(cause).__name__})"
        super().__init__(reason)
        self.summary = summary
        self.reason = reason


@dataclass
class _Record:
    """A valid line."""

    line: int
    data: dict[str, Any]
    key: str | None  # users.username_key of its username


@dataclass
class _Batch:
    """What one batch changed, merged into the run once it is committed."""

    summary: ImportSummary = field(default_factory=ImportSummary)
    problems: list[LineProblem] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> new row
    keys: dict[str, str] = field(default_factory=dict)  # username key -> email
    events: list[tuple[uuid.UUID, dict[str, Any]]] = field(default_factory=list)


def parse_line(number: int, raw: bytes | str) -> _Record | LineProblem | None:
    """A line as a valid record, the problem with it, or None for a blank line."""
    if len(raw) > MAX_LINE_BYTES:
        return LineProblem(number, "validation_error", {"line": [f"Longer than {MAX_LINE_BYTES} bytes."]})
    if not raw.strip():
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        where = f" at character {error.pos}" if error.pos else ""
        return LineProblem(number, "invalid_json", {"line": [f"Not JSON in UTF-8: {error.msg}{where}."]})
    if not isinstance(document, dict):
        return LineProblem(number, "invalid_json", {"line": ["Must be a JSON object, one user a line."]})
    try:
        data = _schema.load(document)
    except ValidationError as error:
        return LineProblem(number, "validation_error", _messages(error.messages))
    if "name" in data and data["name"] is None:
        del data["name"]  # many services leave the name empty: the email's local part, as for create-admin
    stored = data.get("password_hash")
    if stored is not None and hashformats.is_usable(stored):
        try:
            hashformats.describe(stored)
        except hashformats.UnsupportedHash as error:
            return LineProblem(number, "unsupported_hash", {"password_hash": [str(error)]})
    elif stored is not None:
        data["password_hash"] = None  # Django's "!": no usable password, as without one
    return _Record(number, data, users.username_key(data.get("username")))


def _messages(messages: Any) -> dict[str, list[str]]:
    """marshmallow's messages as field -> list of text."""
    if isinstance(messages, dict):
        return {str(name): [str(text) for text in (value if isinstance(value, list) else [value])]
                for name, value in messages.items()}  # fmt: skip
    return {"line": [str(messages)]}


class Importer:
    """One run of the import over a stream of lines."""

    def __init__(
        self,
        *,
        on_conflict: str = "fail",
        dry_run: bool = False,
        allow_reserved: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        report: Callable[[LineProblem], None] | None = None,
    ) -> None:
        """Settings of the run; report(problem) is called for every failed line, as it is found."""
        if on_conflict not in CONFLICT_MODES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_MODES}")
        self.on_conflict = on_conflict
        self.dry_run = dry_run
        self.allow_reserved = allow_reserved
        self.batch_size = batch_size
        self.report = report or (lambda problem: None)
        self.summary = ImportSummary(dry_run=dry_run)
        # What earlier batches of a dry run would have written (a real run finds it in the database).
        self.dry_rows: dict[str, dict[str, Any]] = {}
        self.dry_keys: dict[str, str] = {}
        self.unreported: list[LineProblem] = []  # reported in line order, once their batch is done

    def run(self, lines: Iterable[bytes | str]) -> ImportSummary:
        """Import every line; the summary is also recorded in the audit trail (not for a dry run).

        Raises ImportInterrupted (with the summary of the batches committed) when the database
        fails or the operator interrupts: what was committed stays, a rerun with skip finishes.
        """
        try:
            return self._run(lines)
        except (SQLAlchemyError, KeyboardInterrupt) as error:
            db.session.rollback()
            raise ImportInterrupted(self.summary, error) from error

    def _run(self, lines: Iterable[bytes | str]) -> ImportSummary:
        """run() proper."""
        batch: list[_Record] = []
        for number, raw in enumerate(lines, start=1):
            if number == 1:
                # a byte order mark
                raw = raw.removeprefix(b"\xef\xbb\xbf") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
            parsed = parse_line(number, raw)
            if isinstance(parsed, LineProblem):
                self.summary.failed += 1
                self.unreported.append(parsed)
            elif parsed is not None:
                batch.append(parsed)
                if len(batch) >= self.batch_size:
                    self._commit(batch)
                    batch = []
        self._commit(batch)
        if not self.dry_run:
            audit.record("users_imported", on_conflict=self.on_conflict, **self._counts())
            db.session.commit()
        return self.summary

    def _counts(self) -> dict[str, Any]:
        """The counts as audit details."""
        return {name.removeprefix("users."): value for name, value in self.summary.counts().items()}

    def _commit(self, records: list[_Record]) -> None:
        """Apply a batch, then report the problems of the lines read so far, in line order."""
        self._apply_batch(records)
        for problem in sorted(self.unreported, key=lambda problem: problem.line):
            self.report(problem)
        self.unreported = []

    def _apply_batch(self, records: list[_Record]) -> None:
        """Apply a batch in one transaction; if the database refuses it (a twin signed up meanwhile),
        apply its lines one by one so that only the culprit fails."""
        if not records:
            return
        try:
            result = self._apply(records)
            if self.dry_run:
                db.session.rollback()
                self.dry_rows.update(result.rows)
                self.dry_keys.update(result.keys)
            else:
                db.session.commit()
        except IntegrityError as error:
            db.session.rollback()
            if len(records) > 1:
                for record in records:
                    self._apply_batch([record])
                return
            conflict = users.conflict_from(error)
            self.summary.failed += 1
            self.unreported.append(LineProblem.of(records[0].line, conflict))
            return
        except BaseException:
            db.session.rollback()
            raise
        for name in ("imported", "updated", "skipped", "failed"):
            setattr(self.summary, name, getattr(self.summary, name) + getattr(result.summary, name))
        self.unreported.extend(result.problems)

    def _apply(self, records: list[_Record]) -> _Batch:
        """Decide every line of the batch and stage its writes (none in a dry run)."""
        batch = _Batch()
        existing, holders = self._taken(records)
        for record in records:
            try:
                self._decide(record, batch, existing, holders)
            except AppError as error:
                batch.summary.failed += 1
                batch.problems.append(LineProblem.of(record.line, error))
        if batch.rows and not self.dry_run:
            # Core, not the ORM's bulk insert: that one splits the rows by which values are None
            # (a username or not), and a batch would become hundreds of statements.
            db.session.execute(insert(User.__table__), list(batch.rows.values()))
            for row in batch.rows.values():
                events.user_created_row(row)
        if batch.events and not self.dry_run:
            audit.record_many("user_imported", batch.events)
        return batch

    def _taken(self, records: list[_Record]) -> tuple[dict[str, Any], dict[str, str]]:
        """The accounts holding the batch's emails (User rows when updating) and who holds its usernames."""
        emails = {record.data["email"] for record in records}
        keys = {record.key for record in records if record.key is not None}
        if self.on_conflict == "update":
            existing: dict[str, Any] = {
                user.email: user for user in db.session.scalars(select(User).where(User.email.in_(emails)))
            }
        else:
            existing = dict.fromkeys(db.session.scalars(select(User.email).where(User.email.in_(emails))), True)
        holders: dict[str, str] = {}
        if keys:
            query = select(User.username_key, User.email).where(User.username_key.in_(keys))
            holders = {key: email for key, email in db.session.execute(query) if key is not None}
        for email in emails & self.dry_rows.keys():
            existing.setdefault(email, self.dry_rows[email])
        holders.update({key: self.dry_keys[key] for key in keys & self.dry_keys.keys()})
        return existing, holders

    def _decide(self, record: _Record, batch: _Batch, existing: dict[str, Any], holders: dict[str, str]) -> None:
        """Import, update, skip or fail one valid line. Raises AppError for a failed line."""
        email = record.data["email"]
        holder = (batch.keys.get(record.key) or holders.get(record.key)) if record.key is not None else None
        target = batch.rows.get(email, existing.get(email))
        if target is None:
            if holder is not None:
                raise UsernameTaken(errors={"username": ["This username is taken."]})
            self._check_reserved(record)
            row = _new_row(record.data)
            batch.rows[email] = row
            if record.key is not None:
                batch.keys[record.key] = email
            details = {"action": "created", "line": record.line, "hash_format": _hash_format(row["password_hash"])}
            batch.events.append((row["id"], details))
            batch.summary.imported += 1
            return
        if self.on_conflict == "skip":
            batch.summary.skipped += 1
            return
        if self.on_conflict == "fail":
            raise EmailTaken(errors={"email": ["An account with this email already exists."]})
        if holder is not None and holder != email:
            raise UsernameTaken(errors={"username": ["This username is taken."]})
        changes = _changes(target, record.data)
        if not changes:
            batch.summary.skipped += 1  # already as the line says: a rerun changes nothing
            return
        if "username" in changes:
            self._check_reserved(record)
        if isinstance(target, User):
            self._update(target, changes, record, batch)
        else:  # a row of this batch, or of an earlier batch of a dry run
            target.update(_column_values(changes))
        if record.key is not None:
            batch.keys[record.key] = email
        batch.summary.updated += 1

    def _check_reserved(self, record: _Record) -> None:
        """Signup's rule, unless the operator vouches for the names as an admin would. Raises UsernameReserved."""
        if not self.allow_reserved:
            users.ensure_not_reserved(record.data.get("username"))

    def _update(self, target: User, changes: dict[str, Any], record: _Record, batch: _Batch) -> None:
        """Apply the changes to an existing account, with the rules of an admin's PATCH /users. Raises LastAdmin."""
        demoting = changes.get("role", target.role) != ADMIN
        deactivating = changes.get("is_active", target.is_active) is False
        if demoting or deactivating:
            users.ensure_not_last_admin(target)
        if self.dry_run:
            return
        for name, value in _column_values(changes).items():
            setattr(target, name, value)
        if "password_hash" in changes or changes.get("is_active") is False:
            reason = "deactivated" if changes.get("is_active") is False else "imported"
            sessions.void_all_tokens(target, reason=reason)  # a new password or a deactivation ends every session
        if "is_active" in changes:
            events.user(events.REACTIVATED if target.is_active else events.DEACTIVATED, target)
        if "password_hash" in changes:
            events.user(events.PASSWORD_CHANGED, target)
        if set(changes) - {"is_active", "password_hash"}:
            events.user(events.UPDATED, target)
        details: dict[str, Any] = {"action": "updated", "line": record.line, "fields": sorted(changes)}
        if "password_hash" in changes:
            details["hash_format"] = _hash_format(target.password_hash)
        audit.record("user_imported", target_id=target.id, **details)


def _new_row(data: dict[str, Any]) -> dict[str, Any]:
    """The users row of a new account from a valid line."""
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "email": data["email"],
        "name": data.get("name") or data["email"].split("@")[0][:100],
        "role": data.get("role", "user"),
        "is_active": data.get("is_active", True),
        "email_verified": data.get("email_verified", False),
        "mfa_enabled": False,
        "created_at": data.get("created_at", now),
        "updated_at": now,
        **_column_values({"username": data.get("username"), "password_hash": data.get("password_hash")}),
    }


def _column_values(changes: dict[str, Any]) -> dict[str, Any]:
    """Record fields as column values: the username with its key, no hash as the unusable marker."""
    values = dict(changes)
    if "username" in values:
        values["username_key"] = users.username_key(values["username"])
    if "password_hash" in values and values["password_hash"] is None:
        values["password_hash"] = passwords.unusable_hash()
    return values


def _changes(target: User | dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The fields of the line that differ from the account (absent fields are left as they are)."""
    current = target if isinstance(target, dict) else {name: getattr(target, name) for name in UPDATABLE}
    changes = {}
    for name in UPDATABLE:
        if name not in data:
            continue
        value, old = data[name], current.get(name)
        if name == "password_hash" and value is None:
            if old is not None and not hashformats.is_usable(old):
                continue
        elif value == old:
            continue
        changes[name] = value
    return changes


def _hash_format(stored: str) -> str:
    """The audit detail naming a stored hash's format (never the hash): `bcrypt`, or `none` for the unusable marker."""
    found = hashformats.format_of(stored)
    return found.name if found is not None else "none"


def import_users(lines: Iterable[bytes | str], **settings: Any) -> ImportSummary:
    """Import JSON Lines of users (see Importer). Raises ValueError for an unknown on_conflict."""
    return Importer(**settings).run(lines)


def export_users(*, with_hashes: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[bytes]:
    """Every user as a JSON line of the import's format, oldest first; hashes only when asked.

    An account that must reset exports `"password_hash": null`, so importing the file back gives
    it the same state. The export is audited when it ends (who took the hashes matters).
    """
    names = [name for name in _schema.fields if with_hashes or name != "password_hash"]
    # Emails break ties: the same users export in the same order from any database they were imported into.
    query = select(User).order_by(User.created_at, User.email).execution_options(yield_per=batch_size)
    count = 0
    for user in db.session.scalars(query):
        record = {name: getattr(user, name) for name in names}
        if with_hashes and not hashformats.is_usable(user.password_hash):
            record["password_hash"] = None
        yield orjson.dumps(_schema.dump(record))
        count += 1
    audit.record("users_exported", count=count, with_hashes=with_hashes)
    db.session.commit()
