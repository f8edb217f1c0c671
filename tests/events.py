"""The campaign's two events as the pure-module tests use them (campaign.toml has the same)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mailer.settings import Event

WARSAW = ZoneInfo("Europe/Warsaw")
SMART_CITY = Event(
    id="smart-city",
    title="Warsztat „Smart City – doświadczenia i wyzwania”",
    deadline=datetime(2020, 10, 26, 10, 0, tzinfo=WARSAW),
    aliases=("warsztat", "smart city"),
)
PIM = Event(
    id="pim",
    title="Partnerska Inicjatywa Miast 2021–2023 – nabór miast",
    deadline=datetime(2020, 11, 2, 23, 59, 59, tzinfo=WARSAW),
    aliases=("pim", "partnerska inicjatywa miast", "nabór"),
)
EVENTS = (SMART_CITY, PIM)
