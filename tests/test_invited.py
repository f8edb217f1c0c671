"""A reply from an invited contact completed from the contact list, as a clerk would (issue 13)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.testclient import TestClient

from mailer.clock import Clock
from mailer.models import INBOUND, REGISTRATIONS
from mailer.reading.classify import Kind
from mailer.reading.invited import ContactBook
from mailer.reading.understand import complete, reading_json, stored_reading, understand
from mailer.settings import load_settings
from mailer.trust import FREE_MAIL
from mailer.web.app import create_app
from tests.events import EVENTS
from tests.test_inbox import ON_TIME, answers_to, reply, table, watch_once

RECEIVED = datetime(2020, 10, 20, 10, 0, tzinfo=UTC)
OUR_ID = "<abc123.invitation@example.com>"


@dataclass(frozen=True)
class Row:
    """A contact row as mailer.contacts reads it."""

    key: str
    fields: dict[str, str] = field(default_factory=dict)


def row(address: str, first: str, last: str, position: str, city: str) -> Row:
    return Row(address, {"email": address, "imie": first, "nazwisko": last,
                         "stanowisko": position, "miasto": city})


ROWS = [
    row("anna.nowak@um.kalisz.pl", "Anna", "Nowak", "Inspektor ds. rozwoju", "Kalisz"),
    row("jan.lis@um.plock.pl", "Jan", "Lis", "Kierownik Biura", "Płock"),
    row("ewa.kot@um.plock.pl", "Ewa", "Kot", "Referent", "Płock"),
    row("ola.wrona@gmail.com", "Ola", "Wrona", "Radna", "Tczew"),
]
BOOK = ContactBook(ROWS, {OUR_ID: "anna.nowak@um.kalisz.pl"}, free_mail=FREE_MAIL)


def read(sender: str, body: str, **kwargs: Any) -> Any:
    return understand(reply(sender, body, **kwargs), received=RECEIVED, events=EVENTS,
                      invitee=BOOK.match)


def only(reading: Any) -> dict[str, Any]:
    [person] = reading_json(reading, None)["registrants"]
    return dict(person)


def test_intent_alone_from_an_invited_address_registers_the_contact() -> None:
    """"Zgłaszam się na warsztat" from a contact: name, position, city from the row, the
    e-mail from the sender, the event from the sentence; each value says where it came from."""
    reading = read("anna.nowak@um.kalisz.pl", "Dzień dobry,\nzgłaszam się na warsztat.\n")
    assert reading.kind is Kind.REGISTRATION
    assert str(reading.classification.reason.code) == "contact_intent"
    person = only(reading)
    assert (person["name"], person["position"], person["city"], person["email"]) == (
        "Anna Nowak", "Inspektor ds. rozwoju", "Kalisz", "anna.nowak@um.kalisz.pl")
    assert person["events"] == {"smart-city": "confirmed"}
    assert person["sources"] == {"event": "sentence", "name": "contact", "position": "contact",
                                 "city": "contact", "email": "contact"}
    assert reading.decision is not None and str(reading.decision.answer) == "confirmation"


def test_the_same_words_from_a_stranger_stay_for_review() -> None:
    """Nobody on the list: no identity to take, the reply stays `other`."""
    assert read("kto@nieznany.pl", "Zgłaszam się na warsztat.\n").kind is Kind.OTHER


def test_matched_by_our_message_id_even_from_webmail() -> None:
    """In-Reply-To our invitation's Message-ID finds the contact whatever the sender."""
    reading = read("prywatny@gmail.com", "Potwierdzam udział w PIM.\n", in_reply_to=OUR_ID)
    person = only(reading)
    assert person["name"] == "Anna Nowak" and person["email"] == "prywatny@gmail.com"
    assert person["events"] == {"pim": "confirmed"}


def test_domain_matches_only_one_contact_and_never_webmail() -> None:
    """A colleague's office domain names the contact only when one contact has it; a
    webmail domain names nobody."""
    colleague = read("sekretariat@um.kalisz.pl", "Zgłaszam się na oba wydarzenia.\n")
    assert only(colleague)["city"] == "Kalisz"
    assert read("biuro@um.plock.pl", "Zgłaszam się na warsztat.\n").kind is Kind.OTHER
    assert read("ktos@gmail.com", "Zgłaszam się na warsztat.\n").kind is Kind.OTHER


def test_negated_or_asked_intent_is_no_registration() -> None:
    """"Nie zgłaszam się" and a question register nobody."""
    assert read("anna.nowak@um.kalisz.pl", "Niestety nie zgłaszam się.\n").kind is Kind.OTHER
    asked = read("anna.nowak@um.kalisz.pl", "Czy mogę zgłosić się jeszcze dziś?\n")
    assert asked.kind is Kind.OTHER


def test_automatic_mail_is_never_completed() -> None:
    """An out-of-office from a contact stays an auto-reply, unanswered."""
    reading = read("anna.nowak@um.kalisz.pl", "Zgłaszam się na warsztat.\n",
                   headers={"Auto-Submitted": "auto-replied"})
    assert reading.kind is Kind.AUTO_REPLY and not reading.registrants


def test_what_the_reader_found_wins_and_someone_else_keeps_their_position() -> None:
    """A contact registering a colleague: the colleague's name as written, the office's city
    from the row, never the contact's position."""
    body = ("Dzień dobry,\nzgłaszam na warsztat Pana Piotra Zielińskiego, informatyka, "
            "tel. 62 765 43 21.\n")
    person = only(read("anna.nowak@um.kalisz.pl", body))
    assert person["name"] == "Piotr Zieliński"
    assert person["city"] == "Kalisz" and person["sources"]["city"] == "contact"
    assert person["position"] != "Inspektor ds. rozwoju"
    assert person["sources"]["name"] == "sentence"


def test_a_form_left_without_position_stays_so_but_gets_its_city() -> None:
    """A filled form keeps what its writer chose to leave out; the missing city (required) is
    the contact's office."""
    body = "Wydarzenie: PIM\nImię i nazwisko: Anna Nowak\nStanowisko:\nTelefon: 62 111 22 33\n"
    person = only(read("anna.nowak@um.kalisz.pl", body))
    assert person["position"] is None
    assert person["city"] == "Kalisz" and person["sources"]["city"] == "contact"
    assert person["sources"]["name"] == "form"


def test_an_earlier_form_beats_the_contact_list() -> None:
    """Completing an earlier incomplete form: its values win over the row, the new words
    over both."""
    reading = read("anna.nowak@um.kalisz.pl", "Zgłaszam się na warsztat.\n")
    earlier = {"name": "Anna Nowak-Kowalska", "city": "Urząd Miasta Kalisza", "event": ""}
    merged = complete(reading, lambda sender, refs: earlier, EVENTS)
    person = only(merged)
    assert person["name"] == "Anna Nowak-Kowalska" and person["city"] == "Urząd Miasta Kalisza"
    assert person["sources"]["name"] == "earlier" and person["sources"]["event"] == "sentence"
    assert person["sources"]["position"] == "contact"


def test_the_stored_reading_keeps_the_sources() -> None:
    """The web view's stored reading says where each value of each draft came from."""
    stored = json.loads(stored_reading(read("anna.nowak@um.kalisz.pl", "Zgłaszam się.\n")))
    assert stored["sources"][0]["name"] == "contact"


# --- the watcher, `show` and the web view, over real IMAP and SMTP ----------------------------


async def test_watcher_registers_an_intent_from_an_invited_contact(
        make_workspace: Any, smtp_sink: Any, mailbox: Any) -> None:
    """"Zgłaszam się" from an invited contact is registered from the list, confirmed, its
    sources kept with the registration and the message, shown by `show` and the web view."""
    sink, port = smtp_sink
    server, user = mailbox
    ws = make_workspace(port=port, imap_port=server.port, imap_user=user,
                        contacts=[[r.key, r.fields["imie"], r.fields["nazwisko"],
                                   r.fields["stanowisko"], r.fields["miasto"]] for r in ROWS])
    address = "anna.nowak@um.kalisz.pl"
    server.append(user, reply(f"Anna Nowak <{address}>", "Zgłaszam się na warsztat.\n\n"
                              "Wysłane z iPhone'a\n"), ON_TIME)
    report = await watch_once(ws)
    assert report.kinds["registration"] == 1 and report.answers_sent == 1
    [registration] = table(ws, REGISTRATIONS)
    assert registration["status"] == "complete" and registration["city"] == "Kalisz"
    assert registration["sources"]["name"] == "contact"
    [inbound] = table(ws, INBOUND)
    assert inbound["read"]["registrants"][0]["sources"]["position"] == "contact"
    assert answers_to(sink, address)

    shown = ws.run("show", address, check=True).stdout
    assert "from: event sentence, name contact, position contact, city contact" in shown

    settings = load_settings(ws.config)
    client = TestClient(create_app(settings, clock=Clock(ON_TIME), token="t" * 20, port=8025),
                        base_url="http://127.0.0.1:8025", follow_redirects=False)
    assert client.get("/?token=" + "t" * 20).status_code == 303
    html = client.get(f"/person?address={address}").text
    assert "z listy kontaktów" in html and "ze zdania" in html
