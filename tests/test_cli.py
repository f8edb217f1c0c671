"""The command line: clear errors naming file and key, check, preview."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from mailer import __version__
from mailer.cli.main import cli
from mailer.doctor import Level, check_security
from mailer.settings import key_line
from mailer.skeleton import skeleton_files
from tests.conftest import REPO, Workspace, free_port


def replace_in_config(ws: Workspace, old: str, new: str) -> None:
    text = ws.config.read_text(encoding="utf-8")
    assert old in text
    ws.config.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[storage]", "[storage]\ncolour = 1", "[storage] colour"),
    ("deadline = 2020-10-26T10:00:00", 'deadline = "next monday"', "[event #1] deadline"),
    ('timezone = "Europe/Warsaw"', 'timezone = "Europe/Gdynia"', "[campaign] timezone"),
    ('template = "newsletter"', 'template = "nowsletter"', "templates/nowsletter.txt.j2"),
    ("connections = 2", "connections = 0", "[smtp] connections"),
    ('sender = "Departament', 'sender = "not an address" #', "[campaign] sender"),
    ('id = "pim"', 'id = "smart-city"', "[event #2] id"),
    ("[smtp]", "[smtp\n", "not valid TOML"),
])
def test_config_mistakes_name_file_and_key(make_workspace: Any, old: str, new: str,
                                           expected: str) -> None:
    """Each invalid campaign file exits 1 with the file and key named, never a traceback."""
    ws = make_workspace()
    replace_in_config(ws, old, new)
    result = ws.run("check")
    assert result.returncode == 1
    assert expected in result.stderr and str(ws.config) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("old", "added", "said"), [
    ("timeout = 5\n", "prot = 25",
     "[smtp] prot: unknown key; expected one of allow_plaintext_login, ca_file, connections"),
    ('id = "pim"\n', 'colour = "red"',
     "[event #2] colour: unknown key; expected one of aliases, deadline, id, place, starts"),
    ("[storage]\n", "[colours]",
     "[colours]: unknown table; expected one of the tables answers, campaign, event, imap"),
])
def test_unknown_key_names_file_line_and_what_is_expected(make_workspace: Any, old: str,
                                                          added: str, said: str) -> None:
    """An unknown key or table is named with the file's line and the names allowed there
    (issue 16: it said "got 'an unknown key'", with no line)."""
    ws = make_workspace()
    new = f"{added}\n\n{old}" if added.startswith("[") else f"{old}{added}\n"
    replace_in_config(ws, old, new)
    line = ws.config.read_text(encoding="utf-8").splitlines().index(added) + 1
    result = ws.run("check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {ws.config}:{line}: {said}" in result.stderr
    assert "an unknown" not in result.stderr


def test_a_close_unknown_key_gets_a_hint(make_workspace: Any) -> None:
    """A misspelt key is answered with the allowed name closest to it."""
    ws = make_workspace()
    replace_in_config(ws, "timeout = 5", "timeout = 5\nprot = 25")
    assert "hint: did you mean 'port'?" in ws.run("check").stderr


def test_key_line_finds_the_key_in_its_own_table() -> None:
    """The same key in two tables, or in the second [[event]], is found where it was set;
    quoted keys, dotted keys and sub-table headers count; an inline table is not found."""
    text = ('top = 1\n[smtp]\nport = 1\n\n[imap] # inbox\n"port" = 2\n[[event]]\nx = 1\n'
            "[[event]]\n  x.y = 2\n[smtp.tls]\na = 1\n[answers]\ninline = { k = 1 }\n")
    assert key_line(text, None, "top") == 1
    assert key_line(text, "smtp", "port") == 3
    assert key_line(text, "imap", "port") == 6
    assert key_line(text, "event", "x", nth=1) == 8
    assert key_line(text, "event", "x", nth=2) == 10
    assert key_line(text, "smtp", "tls") == 11
    assert key_line(text, None, "answers") == 13
    assert key_line(text, "answers", "k") is None
    assert key_line(text, "imap", "host") is None


def test_missing_config_file_has_a_hint(tmp_path: Any) -> None:
    """A missing campaign file says which path was tried and how to choose another."""
    ws = Workspace(tmp_path)
    result = ws.run("check")
    assert result.returncode == 1
    assert "campaign file not found" in result.stderr and "MAILER_CONFIG" in result.stderr


def test_template_mistake_names_template_and_line(make_workspace: Any) -> None:
    """A syntax error in a template names the file and line."""
    ws = make_workspace()
    (ws.root / "templates" / "newsletter.txt.j2").write_text("line one\n{% if %}\n")
    result = ws.run("check")
    assert result.returncode == 1
    assert "newsletter.txt.j2:2" in result.stderr and "Traceback" not in result.stderr


def test_undefined_column_names_contact_and_template(make_workspace: Any) -> None:
    """A template using a column the list lacks names the CSV line and the template."""
    ws = make_workspace()
    (ws.root / "templates" / "newsletter.txt.j2").write_text("{{ recipient.telefon }}\n")
    result = ws.run("check")
    assert result.returncode == 1
    assert "list.csv:2" in result.stderr and "telefon" in result.stderr


@pytest.mark.parametrize("answer", ["confirmation", "incomplete", "cancelled"])
def test_check_renders_every_answer_template(make_workspace: Any, answer: str) -> None:
    """A missing answer template fails `check` naming the file (it used to pass, and `watch`
    stopped after registering everyone); a typo in one names its file and the variable."""
    ws = make_workspace()
    assert ws.run("check").returncode == 0
    template = ws.root / "templates" / f"{answer}.txt.j2"
    text = template.read_text(encoding="utf-8")
    template.unlink()
    missing = ws.run("check")
    assert missing.returncode == 1
    assert f"template not found: {template}" in missing.stderr
    template.write_text(text + "{{ sc.tytul }}\n", encoding="utf-8")
    typo = ws.run("check")
    assert typo.returncode == 1
    line = len((text + "{{ sc.tytul }}\n").splitlines())
    assert f"{template}:{line}: answer {answer}" in typo.stderr
    assert "'sc' is undefined" in typo.stderr


def test_check_reports_invalid_rows_and_exits_1(make_workspace: Any) -> None:
    """Invalid addresses are listed with file and line; duplicates are reported."""
    ws = make_workspace(contacts=[["ok@a.example.com", "A", "B", "C", "Łódź"],
                                  ["not-an-address", "A", "B", "C", "Łódź"],
                                  ["OK@a.example.com", "A", "B", "C", "Łódź"]])
    result = ws.run("check")
    assert result.returncode == 1
    assert "list.csv:3" in result.stderr and "not-an-address" in result.stderr
    assert "list.csv:4" in result.stderr and "duplicate" in result.stderr
    assert "1 contact, 1 invalid, 1 duplicate;" in result.stdout  # issue 16: agreement


def test_check_reports_columns_the_templates_and_the_list_do_not_share(
        make_workspace: Any) -> None:
    """A column the templates read (guarded) that the list lacks, and a list column nobody
    reads, are said by `check` (issue 16); the columns the service reads itself are not."""
    ws = make_workspace()
    ws.write_contacts([["a@gdynia.example.com", "Anna", "Lis", "Naczelnik", "Gdynia", "x"]],
                      header=["email", "Imię", "nazwisko", "stanowisko", "miasto", "Uwagi"])
    template = ws.root / "templates" / "newsletter.txt.j2"
    template.write_text(template.read_text(encoding="utf-8") + "{% if recipient.tytul is "
                        "defined %}{{ recipient.tytul }}{% endif %}\n", encoding="utf-8")
    result = ws.run("check")
    assert result.returncode == 0, result.stderr
    assert "templates read recipient.tytul, but no contact list has a column 'tytul'" \
        in result.stderr
    # "Imię" is read (as recipient.imie), and so are the columns the service reads itself.
    assert "1 column of the contact lists is read by no template: uwagi\n" in result.stderr


def test_check_passes_on_the_default_campaign() -> None:
    """The shipped campaign, templates and contact list pass `mailer check`."""
    ws = Workspace(REPO)
    result = ws.run("check")
    assert result.returncode == 0, result.stderr
    assert "20 contacts, 0 invalid, 0 duplicates" in result.stdout
    assert "events open now: smart-city, pim" in result.stdout
    assert "read by no template" not in result.stderr and "recipient." not in result.stderr


def test_preview_writes_the_exact_message(make_workspace: Any) -> None:
    """preview --out writes a message that parses, addressed to the chosen contact."""
    ws = make_workspace()
    out = ws.root / "one.eml"
    result = ws.run("preview", "--to", "OSOBA3@miasto3.example.com", "--out", str(out))
    assert result.returncode == 0, result.stderr
    msg = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "osoba3@miasto3.example.com"
    assert out.stat().st_mode & 0o777 == 0o600  # personal data, as every export (issue 12)
    shown = ws.run("preview", "--to", "osoba3@miasto3.example.com", check=True).stdout
    assert "Subject: Zaproszenie – Wrocław" in shown and "Imię i nazwisko:" in shown


def test_preview_shows_a_long_name_whole(make_workspace: Any) -> None:
    """A display name long enough to take several encoded words, split inside a word as RFC
    2047 allows, shows whole in the preview (issue 16: "Jednostk ami")."""
    name = ("Zespół ds. Współpracy z Jednostkami Samorządu", "Terytorialnego i Organizacjami "
            "Pozarządowymi Urzędu Miejskiego")
    ws = make_workspace(contacts=[["zespol@um.example.com", *name, "Zespół", "Łódź"]])
    shown = ws.run("preview", check=True).stdout
    assert f"To: {' '.join(name)} <zespol@um.example.com>" in shown


@pytest.mark.parametrize(("name", "content", "why"), [
    ("missing.eml", None, "no such file"),
    ("folder.eml", "dir", "not a regular file"),
    ("empty.eml", b"", "not an e-mail message"),
    ("notes.txt", b"[project]\nname = 'x'\n", "not an e-mail message"),
    ("photo.eml", bytes(range(256)) * 8, "not an e-mail message"),
])
def test_inspect_names_a_file_it_cannot_use(make_workspace: Any, name: str,
                                            content: bytes | str | None, why: str) -> None:
    """inspect on a missing, unreadable or non-message file: exit 1 naming it, no traceback."""
    ws = make_workspace()
    path = ws.root / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = ws.run("inspect", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {path}: " in result.stderr and why in result.stderr
    assert "hint: give a message saved as .eml" in result.stderr


def test_inspect_reports_a_read_error(make_workspace: Any) -> None:
    """A file that fails while being read (EIO here) is exit 1 too, with the system's reason."""
    ws = make_workspace()
    result = ws.run("inspect", "/proc/self/mem")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "/proc/self/mem: cannot read the message: Input/output error" in result.stderr


def test_bad_rehearsal_clock_is_explained(make_workspace: Any) -> None:
    """MAILER_NOW without an offset is refused with the expected form."""
    ws = make_workspace()
    result = ws.run("check", now="2020-10-19 09:00")
    assert result.returncode == 1 and "+02:00" in result.stderr


def set_transport(ws: Workspace, table: str, host: str, *extra: str) -> None:
    """Point [table] at `host` with no TLS and a login (the smtp table has none by default)."""
    lines = [f'host = "{host}"', 'security = "none"', *extra]
    if table == "smtp":
        lines.append('username = "organizer"')
    replace_in_config(ws, f'[{table}]\nhost = "127.0.0.1"', f"[{table}]\n" + "\n".join(lines))


@pytest.mark.parametrize("table", ["smtp", "imap"])
def test_clear_text_login_to_another_host_is_refused(make_workspace: Any, table: str) -> None:
    """A login without TLS to a host that is not loopback exits 1 naming file, table, key."""
    ws = make_workspace()
    set_transport(ws, table, "mail.example.gov.pl")
    result = ws.run("check")
    assert result.returncode == 1, result.stdout
    assert f"{ws.config}: [{table}] security" in result.stderr
    assert "in clear to mail.example.gov.pl" in result.stderr
    assert f"[{table}] allow_plaintext_login = true" in result.stderr  # the hint
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("table", "host", "extra"), [
    ("smtp", "localhost", ()), ("imap", "127.0.0.2", ()), ("smtp", "::1", ()),
    ("imap", "mail.example.gov.pl", ("allow_plaintext_login = true",)),
    ("smtp", "relay.example.gov.pl", ("allow_plaintext_login = true",)),
])
def test_clear_text_login_on_loopback_or_when_allowed(make_workspace: Any, table: str, host: str,
                                                      extra: tuple[str, ...]) -> None:
    """Loopback needs no TLS; another host only with allow_plaintext_login = true."""
    ws = make_workspace()
    set_transport(ws, table, host, *extra)
    result = ws.run("check")
    assert result.returncode == 0, result.stderr


def test_allow_plaintext_login_must_be_a_boolean(make_workspace: Any) -> None:
    """allow_plaintext_login = "yes" is a mistake named by file and key."""
    ws = make_workspace()
    set_transport(ws, "imap", "mail.example.gov.pl", 'allow_plaintext_login = "yes"')
    result = ws.run("check")
    assert result.returncode == 1 and "[imap] allow_plaintext_login" in result.stderr


@pytest.mark.parametrize("table", ["smtp", "imap"])
def test_doctor_warns_of_clear_text_logins(table: str) -> None:
    """doctor names a password sent in clear for SMTP and IMAP alike; loopback is fine."""
    [allowed] = check_security(table, "none", "organizer", "mail.example.gov.pl")
    assert allowed.level is Level.WARN and "password for 'organizer'" in allowed.detail
    [anonymous] = check_security(table, "none", "", "mail.example.gov.pl")
    assert anonymous.level is Level.WARN and "in clear" in anonymous.detail
    [local] = check_security(table, "none", "organizer", "127.0.0.1")
    assert local.level is Level.OK
    assert check_security(table, "tls", "organizer", "mail.example.gov.pl") == []


def test_refused_imap_connection_is_explained(make_workspace: Any) -> None:
    """`watch --once` with nothing listening on the [imap] port: one line saying so and a
    hint where to look, exit 1 (issue 16: it printed a raw ConnectionRefusedError(111, …))."""
    port = free_port()
    ws = make_workspace(imap_port=port)
    result = ws.run("watch", "--once")
    assert result.returncode == 1, result.stdout
    assert f"error: cannot connect to IMAP 127.0.0.1:{port}: connection refused\n" in result.stderr
    assert "hint: is the IMAP server running, and are [imap] host, port and security right" \
        in result.stderr and "`mailer doctor` checks them" in result.stderr
    assert "Traceback" not in result.stderr and "ConnectionRefusedError" not in result.stderr


def test_refused_smtp_connection_is_explained(make_workspace: Any) -> None:
    """A test send with nothing listening on the [smtp] port says so in words, exit 1
    (issue 16: it printed aiosmtplib's SMTPConnectError text with its errno)."""
    port = free_port()
    ws = make_workspace(port=port)
    result = ws.run("send", "--to", "test@example.com")
    assert result.returncode == 1, result.stdout
    assert f"cannot connect to SMTP 127.0.0.1:{port}: connection refused" in result.stderr
    assert "Traceback" not in result.stderr and "SMTPConnectError" not in result.stderr
    assert "Errno" not in result.stderr
    assert "None" not in result.stderr and "mailer doctor" in result.stderr


def test_init_writes_a_campaign_folder_that_checks(tmp_path: Path) -> None:
    """`mailer init DIR` writes the packaged campaign (bilingual comments, templates, the
    Windows-1250 sample list, a .gitignore for state/), says what to edit, and it checks."""
    result = Workspace(tmp_path).run("init", "kampania", check=True)
    folder = tmp_path / "kampania"
    assert "Next:" in result.stdout and "campaign.toml" in result.stdout
    written = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert written == set(skeleton_files())
    assert {"templates/newsletter.txt.j2", "templates/confirmation.html.j2"} <= written
    config = (folder / "campaign.toml").read_text(encoding="utf-8")
    assert "# Nadawca (nagłówek From)" in config and "# The sender (From)" in config
    contacts = (folder / "recipients" / "miasta.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        contacts.decode("utf-8")
    assert contacts.decode("cp1250").startswith("email;imie;nazwisko;stanowisko;miasto")
    assert "state/" in (folder / ".gitignore").read_text(encoding="utf-8").splitlines()
    checked = Workspace(folder).run("check")
    assert checked.returncode == 0, checked.stderr
    assert "20 contacts, 0 invalid" in checked.stdout


def test_init_refuses_to_overwrite_and_names_the_files(tmp_path: Path) -> None:
    """`mailer init` into a folder with a campaign exits 1 naming what it would overwrite,
    and writes nothing."""
    folder = tmp_path / "kampania"
    (folder / "templates").mkdir(parents=True)
    (folder / "campaign.toml").write_text("# mine\n", encoding="utf-8")
    (folder / "templates" / "newsletter.txt.j2").write_text("mine\n", encoding="utf-8")
    result = Workspace(tmp_path).run("init", "kampania")
    assert result.returncode == 1
    assert "kampania/campaign.toml" in result.stderr
    assert "kampania/templates/newsletter.txt.j2" in result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "campaign.toml").read_text(encoding="utf-8") == "# mine\n"
    assert sorted(p.name for p in folder.rglob("*")) == [
        "campaign.toml", "newsletter.txt.j2", "templates"]


def test_the_checkout_uses_the_packaged_campaign() -> None:
    """The repository's campaign.toml, templates/ and sample list are the package's files
    (one source), and the test data's templates links still resolve to them."""
    skeleton = (REPO / "src" / "mailer" / "skeleton").resolve()
    for name in ("campaign.toml", "templates", "recipients/miasta.csv"):
        assert (REPO / name).resolve() == skeleton / name
    for data in ("officials", "officials-holdout"):
        assert (REPO / "tests" / "data" / data / "templates").resolve() == skeleton / "templates"
    assert set(skeleton_files()) >= {"campaign.toml", "recipients/miasta.csv", ".gitignore"}


def test_version_is_the_package_version() -> None:
    """`mailer --version` prints the installed package's version."""
    result = Workspace(REPO).run("--version", check=True)
    assert result.stdout.strip() == f"mailer, version {__version__}"


def test_help_lists_each_command_summary_whole(tmp_path: Path) -> None:
    """`mailer --help` shows every command's summary whole, wrapped: never cut to "…(a..."
    or at an abbreviation's full stop ("RODO art."), issue 16."""
    result = Workspace(tmp_path).run("--help", check=True, COLUMNS="80")
    section = result.stdout.split("Commands:", 1)[1]
    assert "..." not in section
    assert not [line for line in section.splitlines() if line.rstrip().endswith("art.")]
    listed = " ".join(section.split())
    for name, command in cli.commands.items():
        first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
        assert f"{name} {first_paragraph}" in listed
