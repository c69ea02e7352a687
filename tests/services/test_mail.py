"""Mail: templates (text and HTML, operator overrides, headers) and real SMTP sessions against aiosmtpd."""

from __future__ import annotations

import logging

import pytest

from app.services import mail
from tests.smtp import SMTPServer, free_port, html_of, text_of

CONTEXT = {"name": "Ada", "link": "https://app.example/reset?token=abc", "expires_in": "1 hour"}


def test_render_has_text_and_html_parts_and_the_headers(app):
    with app.app_context():
        message = mail.render("password_reset", to="ada@example.com", context=CONTEXT)
    assert message["Subject"] == "Reset your password"
    assert message["To"] == "ada@example.com" and message["From"] == "no-reply@localhost"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].startswith("<") and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    assert "https://app.example/reset?token=abc" in text_of(message)
    assert 'href="https://app.example/reset?token=abc"' in html_of(message)
    # The mail says how long the link works.
    assert "1 hour" in text_of(message) and "1 hour" in html_of(message)


def test_html_part_escapes_what_users_typed(app):
    with app.app_context():
        message = mail.render("password_reset", to="a@example.com", context={**CONTEXT, "name": "<script>x</script>"})
    assert "<script>" not in html_of(message)
    assert "&lt;script&gt;" in html_of(message)


def test_every_shipped_template_renders(app):
    context = {**CONTEXT, "old_email": "old@example.com", "new_email": "new@example.com", "how": "changed"}
    with app.app_context():
        for template in mail.TEMPLATES:
            message = mail.render(template, to="a@example.com", context=context)
            assert message["Subject"] and text_of(message).strip() and html_of(message).strip()


def test_operator_templates_override_the_shipped_ones(make_app, tmp_path):
    (tmp_path / "password_reset.subject.txt").write_text("Acme: new password\n")
    (tmp_path / "password_reset.txt").write_text("Acme says: {{ link }} ({{ expires_in }})\n")
    app = make_app(MAIL_TEMPLATES_DIR=str(tmp_path))
    with app.app_context():
        message = mail.render("password_reset", to="a@example.com", context=CONTEXT)
    assert message["Subject"] == "Acme: new password"
    assert text_of(message).startswith("Acme says: https://app.example/reset?token=abc (1 hour)")
    assert "Choose a new password" in html_of(message)  # the HTML part was not overridden


def _send(app, **context):
    with app.app_context():
        mail.send(mail.render("password_reset", to="ada@example.com", context={**CONTEXT, **context}))


def test_send_over_plain_smtp_on_loopback(make_app, smtp_server):
    _send(make_app(MAIL_URL=smtp_server.url(), MAIL_FROM="auth@example.org"))
    (message,) = smtp_server.inbox.wait(1)
    assert message["To"] == "ada@example.com" and message["From"] == "auth@example.org"
    assert smtp_server.inbox.envelopes == [("auth@example.org", ["ada@example.com"])]


def test_smtp_plain_refuses_a_host_off_this_machine(make_app):
    app = make_app(MAIL_URL="smtp+plain://mail.example.com:25")
    with pytest.raises(mail.MailRefused, match="loopback"):
        _send(app)


def test_starttls_with_auth_and_a_self_signed_certificate(make_app, tmp_path):
    server = SMTPServer(mode="starttls", cert_dir=tmp_path, credentials=("mailer", "p@ss word")).start()
    try:
        app = make_app(MAIL_URL=server.url("smtp", "mailer:p%40ss%20word@"), MAIL_TLS_CA_FILE=server.cert_file)
        _send(app)
        assert len(server.inbox.wait(1)) == 1
        assert server.logins == ["mailer"]
    finally:
        server.stop()


def test_starttls_verifies_the_certificate(make_app, tmp_path):
    server = SMTPServer(mode="starttls", cert_dir=tmp_path).start()
    try:
        with pytest.raises(mail.MailError, match="CERTIFICATE_VERIFY_FAILED"):
            _send(make_app(MAIL_URL=server.url("smtp")))  # the system CAs do not know it
        assert server.inbox.messages == []
    finally:
        server.stop()


def test_smtp_refuses_a_server_without_starttls(make_app, smtp_server):
    with pytest.raises(mail.MailRefused, match="STARTTLS"):
        _send(make_app(MAIL_URL=smtp_server.url("smtp")))
    assert smtp_server.inbox.messages == []


def test_implicit_tls(make_app, tmp_path):
    server = SMTPServer(mode="tls", cert_dir=tmp_path, credentials=("u", "pw")).start()
    try:
        _send(make_app(MAIL_URL=server.url("smtps", "u:pw@"), MAIL_TLS_CA_FILE=server.cert_file))
        assert len(server.inbox.wait(1)) == 1 and server.logins == ["u"]
    finally:
        server.stop()


def test_wrong_credentials_are_a_mail_error(make_app, tmp_path):
    server = SMTPServer(mode="tls", cert_dir=tmp_path, credentials=("u", "pw")).start()
    try:
        # aiosmtpd answers a failed AUTH with 535 after a delay; either way it is a MailError, not a send.
        with pytest.raises(mail.MailError):
            _send(make_app(MAIL_URL=server.url("smtps", "u:wrong@"), MAIL_TLS_CA_FILE=server.cert_file, MAIL_TIMEOUT=2))
        assert server.inbox.messages == []
    finally:
        server.stop()


def test_a_server_that_is_down_is_a_mail_error(make_app):
    with pytest.raises(mail.MailError, match="ConnectionRefusedError"):
        _send(make_app(MAIL_URL=f"smtp+plain://127.0.0.1:{free_port()}", MAIL_TIMEOUT="2"))


def test_console_transport_writes_the_mail_to_the_log(app, caplog):
    caplog.set_level(logging.INFO, logger="app.services.mail")
    logging.getLogger("app").propagate = True
    try:
        _send(app)
    finally:
        logging.getLogger("app").propagate = False
    assert "Reset your password" in caplog.text


def test_the_transport_never_shows_its_password():
    transport = mail.parse_url("smtps://user:hunter2@mail.example.com")
    assert (transport.host, transport.port, transport.username, transport.password) == (
        "mail.example.com", 465, "user", "hunter2",
    )  # fmt: skip
    assert "hunter2" not in repr(transport)
