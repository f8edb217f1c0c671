"""The reader's Polish (and English) words as data: form labels, negations, closings, footers."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Every phrase here is written folded — lower case, no diacritics ("imie", "urzad") — because
# the reader compares folded text. A new synonym is one line. In a label phrase a "." may be
# left out and a "-" may be left out ("tel." also matches "tel", "e-mail" also "email"); a
# space stands for one or more blanks (none after a "."). Issue 13: collected from how Polish
# town halls, counties and their units label these fields in letters, forms and tables.

# --- form labels, by the field they fill -----------------------------------------------------
# "given"/"family" are "Imię:" and "Nazwisko:" on separate lines: together they make one name.
# "contact" is a combined label ("Kontakt: adres, telefon"): its value is split into e-mail and
# phone. The reader tries the keys in this order, so a longer label of an earlier key wins
# ("e-mail / telefon" is a contact, not an e-mail).
LABELS: dict[str, tuple[str, ...]] = {
    "event": (
        "wydarzenie", "wybrane wydarzenie", "wybrane wydarzenia", "rodzaj wydarzenia",
        "nazwa wydarzenia", "wydarzenia", "zglaszam udzial w", "zgloszenie udzialu w",
        "udzial w", "zglaszam sie na", "zgloszenie na", "wybor", "wybieram", "wybrano",
        "dotyczy", "dot.", "forma udzialu", "event", "events",
    ),
    "name": (
        "imie i nazwisko", "imie, nazwisko", "imie nazwisko", "imie / nazwisko",
        "nazwisko i imie", "nazwisko, imie", "nazwisko imie", "nazwisko / imie",
        "im. i nazw.", "imie i nazw.", "nazw. i im.", "uczestnik", "uczestniczka",
        "uczestnicy", "dane uczestnika", "dane uczestniczki", "dane osoby", "osoba zglaszana",
        "osoba zgloszona", "zgloszona osoba", "osoba delegowana", "osoba uczestniczaca",
        "osoba do kontaktu", "full name", "name", "participant",
    ),
    "given": ("imie", "imiona"),
    "family": ("nazwisko",),
    "position": (
        "stanowisko", "zajmowane stanowisko", "stanowisko sluzbowe", "nazwa stanowiska",
        "stan.", "funkcja", "pelniona funkcja", "pelniona funkcja / stanowisko",
        "stanowisko / funkcja", "position", "job title", "role",
    ),
    "city": (
        "miasto / urzad", "urzad miasta", "urzad gminy", "miasto", "urzad", "nazwa urzedu",
        "nazwa jednostki", "jednostka", "jednostka organizacyjna", "jedn. org.", "jedn.",
        "jednostka samorzadu terytorialnego", "jst", "gmina", "miasto / gmina",
        "gmina / miasto", "samorzad", "instytucja", "nazwa instytucji", "organizacja",
        "nazwa organizacji", "urzad / instytucja", "miejsce pracy", "pracodawca",
        "reprezentowana jednostka", "reprezentowane miasto", "city", "office",
        "municipality", "organisation", "organization", "institution",
    ),
    "contact": (
        "kontakt", "dane kontaktowe", "dane do kontaktu", "e-mail / telefon", "e-mail / tel.",
        "mail / tel.", "tel. / e-mail", "telefon / e-mail", "tel. / mail", "contact",
    ),
    "email": (
        "adres e-mail", "adres mailowy", "adres poczty elektronicznej", "adres poczty",
        "poczta elektroniczna", "poczta e-mail", "e-mail", "mail", "e-mail address",
    ),
    # Words that also name a postal address ("Adres: ul. …", "Poczta: 86-300 Grudziądz"):
    # an e-mail only when the value holds an "@".
    "mailbox": ("poczta", "adres", "skrzynka"),
    "phone": (
        "telefon", "tel.", "nr tel.", "nr telefonu", "numer telefonu", "numer tel.",
        "nr kontaktowy", "numer kontaktowy", "tel. kom.", "kom.", "komorka", "nr kom.",
        "tel. / fax", "telefon / fax", "tel. stacjonarny", "phone", "mobile", "gsm",
    ),
}

# Words that may follow any label: "Telefon kontaktowy", "Tel. służb.", "E-mail uczestnika".
LABEL_QUALIFIERS = (
    "sluzb.", "sluzbowy", "sluzbowe", "sluzbowa", "kontaktowy", "kontaktowe", "kontaktowa",
    "kom.", "komorkowy", "komorkowego", "stacjonarny", "prywatny", "uczestnika",
    "uczestniczki", "osoby zglaszanej", "do kontaktu", "sluzbowego",
)

# --- what ends a form: closings, and the lines phones and mail apps add ------------------------
# A line starting with one of these is never a value and never continues one.
CLOSINGS = (
    "pozdrawiam", "pozdrowienia", "z powazaniem", "z wyrazami", "serdecznie", "dziekuje",
    "dziekujemy", "dzieki", "regards", "best", "thanks", "thank you", "kind regards",
    "sent from", "wyslano z", "wyslane z", "--",
)

# "Sent from my phone" lines and app-download links of phones and mail apps (Polish and
# English variants): matched anywhere in a line, they make it a footer.
FOOTERS = (
    "wyslane z iphone", "wyslane z mojego iphone", "wyslano z iphone", "wyslano z mojego",
    "wyslane z mojego", "wyslane z telefonu", "wyslano z telefonu", "wyslane z urzadzenia",
    "wyslano z urzadzenia", "wyslano z aplikacji", "wyslane z aplikacji", "wyslano z poczty",
    "wyslane za pomoca", "wyslano za pomoca", "wyslano ze smartfona", "wyslane ze smartfona",
    "wyslane z mojego smartfona", "wyslane z tabletu", "sent from my", "sent from outlook",
    "sent with", "get outlook for", "uzyskaj aplikacje outlook", "pobierz aplikacje",
    "pobierz outlook", "aplikacja poczta dla windows", "poczta dla windows",
    "samsung galaxy", "smartfona samsung", "telefonu huawei", "smartfona huawei",
    "urzadzenia huawei", "urzadzenia xiaomi", "aplikacji onet poczta", "aplikacji poczta wp",
    "aplikacji interia poczta", "aka.ms/", "go.microsoft.com/fwlink", "poczta.onet.pl/aplikacja",
    "android mail", "blackberry",
)

# --- the event field -------------------------------------------------------------------------
# A negation before an event ("bez PIM", "nie oba", "rezygnuję z warsztatu") or right after it
# ("PIM – nie", "warsztat: nie") makes the event not chosen. Issue 13.
NEGATIONS_BEFORE = (
    "nie", "bez", "oprocz", "procz", "z wyjatkiem", "wylaczajac", "rezygnuje z",
    "rezygnujemy z", "rezygnacja z", "not", "no", "without", "except",
)
NEGATIONS_AFTER = (
    "nie", "nie dotyczy", "nie bierzemy", "nie wezmiemy", "nie wezme", "rezygnuje",
    "rezygnujemy", "odpada", "no", "not",
)
# "nie tylko PIM" means PIM and more: these words right after a negation cancel it.
NEGATION_BREAKERS = ("tylko", "only")
NEGATION_REACH = 4  # a negation counts this many words before the event, at most
# Words that name no event but are no unknown event either ("PIM – tak", "tylko warsztat").
EVENT_FILLERS = (
    "tak", "nie", "tylko", "jedynie", "wylacznie", "sam", "sama", "samo", "dziekuje",
    "dziekujemy", "prosze", "yes", "only", "online", "stacjonarnie", "zdalnie",
)

# --- values ----------------------------------------------------------------------------------
# "as above", "the sender": the field means the sender's own (for an e-mail) or nothing.
SAME_AS_ABOVE = (
    "jw", "j w", "jak wyzej", "jak powyzej", "jak w stopce", "nadawca", "adres nadawcy",
    "ten sam", "ten sam adres", "jak nadawca", "same as above", "as above", "sender",
)
# Forms of address before a name: "Pani Magdalena Sobczak" is Magdalena Sobczak.
ADDRESS_FORMS = ("pan", "pani")
# Their other cases, before a name in prose: "zgłaszam Pana Jana Nowaka", "Panią Annę Nowak".
ADDRESS_FORM_CASES = ("pana", "pania", "panu", "panem", "pania")
# A telephone extension after the number: "wew. 305", "w. 12", "wewn. 305", "ext. 7".
EXTENSION_WORDS = ("wewn.", "wew.", "w.", "ext.", "x")


# --- people named in prose, lists and signatures (reading.prose, issue 13) ---------------------
# Words that say the message registers someone ("zgłaszam", "weźmie udział"): matched as word
# starts on the folded text of one sentence; a "nie" right before one, or a question mark ending
# the sentence, makes it none ("nie wezmę udziału", "czy mogę zgłosić…?").
INTENTS = (
    "zglaszam", "zglaszamy", "zglasza", "zglaszaja", "zgloszenie udzialu", "zglaszam udzial",
    "prosze o zgloszenie", "prosze zapisac", "prosze o zapisanie", "prosimy o zapisanie",
    "prosze o zarejestrowanie", "prosimy o zarejestrowanie", "prosze o rejestracje",
    "prosimy o rejestracje", "prosze o wpisanie", "prosze dopisac", "prosze o dopisanie",
    "zapisuje sie", "zapisuje", "zapisujemy", "rejestruje", "wezme udzial", "wezmie udzial",
    "wezmiemy udzial", "wezma udzial", "udzial wezmie", "udzial wezme", "udzial wezma",
    "udzial wezmiemy", "potwierdzam ~ udzial", "potwierdza ~ udzial", "potwierdzamy ~ udzial",
    "potwierdzam ~ uczestnictwo", "potwierdzamy ~ uczestnictwo", "potwierdzam ~ obecnosc",
    "potwierdzam chec udzialu", "potwierdzamy chec udzialu",
    "deklaruje ~ udzial", "deklarujemy ~ udzial", "deklaruje ~ uczestnictwo", "uczestniczyc bedzie",
    "bedzie uczestniczyc", "bedzie uczestniczyl", "bedzie uczestniczyla", "beda uczestniczyc",
    "wezme w nim udzial", "dolacze", "dolaczymy", "chcialbym wziac udzial",
    "chcialabym wziac udzial", "chcielibysmy wziac udzial", "chcemy wziac udzial",
    "zainteresowane udzialem", "zainteresowany udzialem", "zainteresowana udzialem",
    "zainteresowani udzialem", "bede obecny", "bede obecna", "bedzie obecny", "bedzie obecna",
    "prosze mnie zapisac", "prosze nas zapisac", "prosze mnie zglosic", "prosze mnie dopisac",
    "prosze mnie wpisac", "prosze nas wpisac", "prosimy nas wpisac", "prosimy o wpisanie",
    "prosimy zapisac", "prosimy wpisac", "prosze wpisac",
    "bede na warsztacie", "bede na warsztatach", "bedziemy na warsztacie", "bede uczestniczyc",
    "bede uczestniczyl", "bede uczestniczyla",
    "sign me up",
)
# Pointing to the signature as the data: "dane w stopce", "moje dane poniżej".
SIGNATURE_POINTERS = (
    "dane w stopce", "dane jak w stopce", "dane w podpisie", "dane jak w podpisie",
    "dane ponizej", "moje dane ponizej", "dane kontaktowe ponizej", "dane w stopce ponizej",
    "jak w stopce", "w stopce ponizej", "dane w sygnaturce", "details below",
)
# Posts and functions, in the nominative: their other cases ("Zastępcy", "inspektora") are
# read as these. An adjective may stand before one ("główny specjalista").
POSITIONS = (
    "burmistrz", "wiceburmistrz", "wojt", "zastepca wojta", "prezydent", "wiceprezydent",
    "sekretarz", "skarbnik", "naczelnik", "kierownik", "inspektor", "podinspektor",
    "referent", "specjalista", "dyrektor", "wicedyrektor", "zastepca", "pelnomocnik",
    "starosta", "wicestarosta", "koordynator", "asystent", "asystentka", "doradca",
    "informatyk", "analityk", "ekspert", "audytor", "architekt", "radca", "rzecznik",
    "przewodniczacy", "przewodniczaca", "prezes", "wiceprezes", "urzednik", "pracownik",
    "sekretarka", "kierowniczka", "mlodszy referent", "stazysta", "stazystka", "manager",
    "menedzer", "officer", "mayor", "deputy", "head", "director", "specialist",
)
POSITION_ADJECTIVES = (
    "glowny", "glowna", "glownego", "glownej", "glownym", "starszy", "starsza",
    "starszego", "starszej", "starszym", "mlodszy", "mlodsza", "mlodszego", "mlodszej",
    "p.o.", "pelniacy obowiazki", "samodzielny", "samodzielna",
)
# What starts an office: the folded word and how it reads in the nominative ("w Urzędzie
# Miejskim" is "Urząd Miejski"). The words after the head stay as written ("Miasta Sanoka").
OFFICE_HEADS = {
    "urzad": "Urząd", "urzedu": "Urząd", "urzedzie": "Urząd", "urzedem": "Urząd",
    "starostwo": "Starostwo", "starostwa": "Starostwo", "starostwie": "Starostwo",
    "starostwem": "Starostwo",
}
OFFICE_WORDS = {
    "miejski": "Miejski", "miejskiego": "Miejski", "miejskim": "Miejski",
    "marszalkowski": "Marszałkowski", "marszalkowskiego": "Marszałkowski",
    "marszalkowskim": "Marszałkowski", "powiatowe": "Powiatowe", "powiatowego": "Powiatowe",
    "powiatowym": "Powiatowe", "gminy": "Gminy", "miasta": "Miasta", "wojewodzki": "Wojewódzki",
}
# Office abbreviations written in capitals ("UM Łomża", "UMiG Kórnik", "UMT").
OFFICE_ABBREVIATIONS = ("um", "ug", "umig", "ugim", "ugm", "umg", "sp", "uw", "umw")
OFFICE_ABBREVIATION_LETTERS = 4  # "UMT", "UMSW": an all-caps word starting "UM"/"UG" this long
# "Miasto Gniezno zgłasza…" names the town: the words after one of these, as written.
TOWN_WORDS = ("miasto", "gmina", "miasto i gmina", "gmina miejska", "gmina miasto")
# Units of an office: never part of a name ("Wydział Strategii Rozwoju" is no person).
UNIT_WORDS = (
    "wydzial", "referat", "biuro", "departament", "zespol", "sekretariat", "kancelaria",
    "gabinet", "oddzial", "dzial", "centrum", "osrodek", "zarzad", "samodzielne", "stanowisko",
    "ministerstwo", "rada", "instytut", "agencja", "fundacja", "stowarzyszenie", "spolka",
)
# Capitalised words that are never part of a person's name.
NAME_STOPWORDS = (
    "dzien", "dobry", "szanowni", "szanowny", "szanowna", "panstwo", "witam", "smart", "city",
    "zoom", "teams", "pim", "miasto", "miasta", "miast", "gmina", "gminy", "powiat", "powiatu",
    "wojewodztwo", "rzeczypospolitej", "polskiej", "dane", "kontakt", "telefon", "tel",
    "e-mail", "email", "mail", "adres", "uwaga", "prosze", "dziekuje", "pozdrawiam",
    "zglaszam", "zglaszamy", "lp", "imie", "nazwisko", "wydarzenie", "warsztat", "ul", "pl",
)
# After these a capitalised pair is a place or a unit, not a person ("w Nowym Sączu").
NAME_NOT_AFTER = (
    "w", "we", "z", "ze", "do", "na", "dla", "od", "przy", "i", "oraz", "ds", "ds.", "a", "o",
    "u", "po", "pod", "nad", "przez", "ul.", "ul", "pl.", "al.", "os.", "miasta", "gminy",
)
# Labels and small words left beside a person's values: no event text ("tel.", "kontakt:").
PERSON_NOISE = (
    "tel", "tel.", "telefon", "kom", "kom.", "komorka", "mail", "e-mail", "email", "adres",
    "kontakt", "nr", "sluzbowy", "sluzbowa", "prywatny", "w", "z", "oraz", "i", "ds", "ds.",
    "fax", "mobile", "phone", "wew", "wew.", "kontaktowy", "kontaktowe",
)

# --- cancellations, unsubscribes, automatic replies in free words (reading.wording) -------------
# Intent phrases: folded words; a word ending in "*" may go on ("zgloszeni*"); "~" stands for
# up to three words between. A question, a "nie" right before, or a condition ("jeśli…") in the
# same clause makes a phrase none. Issue 13.
# Withdrawing from an event: one of these verbs, then (up to three words later) what is withdrawn.
CANCEL_VERBS = (
    "rezygnuje", "rezygnujemy", "rezygnuja", "rezygnacja", "rezygnacje", "zrezygnowac",
    "rezygnowac",
    "zrezygnowal*", "odwoluje", "odwolujemy", "odwolac", "odwolanie", "odwolania", "anuluje",
    "anulujemy", "anulowac", "anulowanie", "anulowania", "anulujcie", "anuluj", "wycofuje",
    "wycofujemy", "wycofac", "wycofanie", "wycofania", "wycofal*", "usunac", "usuniecie",
    "usuniecia", "usun", "usuncie", "skreslic", "skreslenie", "skreslenia", "skresl",
    "wykreslic", "wykreslenie", "wykreslenia", "wykresl", "wypisac", "wypisanie", "wypisz",
    "wypiszcie", "cofam", "cofamy", "cofnac", "cofniecie", "cancel", "withdraw",
)
# What is withdrawn, right after the verb or a few words later ("odwołać swój udział").
CANCEL_OBJECTS = (
    "zgloszenie", "zgloszenia", "zgloszen", "rejestracje", "rejestracji", "udzial", "udzialu",
    "uczestnictwo", "uczestnictwa", "obecnosc", "registration", "participation", "z udzialu",
    "z uczestnictwa", "z rejestracji", "ze zgloszenia", "z obecnosci",
    "z listy uczestnik*", "z listy zgloszonych", "z listy obecnosci", "z listy osob zgloszonych",
    "z listy zapisanych", "z listy zarejestrowanych", "z listy osob", "z warsztat*",
    "ze spotkani*", "z wydarzeni*", "z konferencj*", "ze szkoleni*", "z webinar*",
    "z seminari*", "z naboru", "z forum",
)
# Words for an event in general: "w warsztacie", "na spotkaniu" (the campaign's aliases too).
EVENT_NOUNS = (
    "warsztat*", "spotkani*", "wydarzeni*", "konferencj*", "szkoleni*", "webinar*",
    "seminari*", "nabor*", "forum",
)
# Not coming: "nie będę mogła uczestniczyć", "nie dam rady być", "nie weźmie udziału".
CANNOT = (
    "bede mogl*", "bedzie mogl*", "bedziemy mogli", "bedziemy mogly", "beda mogli", "moge",
    "mozemy", "dam rady", "damy rady", "da rady", "uda mi sie", "uda nam sie", "uda sie",
    "zdolam", "zdazymy", "zdaze", "jestem w stanie", "bede w stanie", "bedziemy w stanie",
    "bedzie w stanie", "mam mozliwosci", "bede mial* mozliwosci", "bedzie mial* mozliwosci",
)
ATTEND = (
    "uczestniczyc", "uczestniczenia", "wziac udzial*", "wziac w nim udzial*", "wziecia udzialu",
    "byc", "byc obecn*", "przyjechac", "przybyc", "dotrzec", "dolaczyc", "pojawic sie",
    "sie pojawic", "stawic sie", "sie stawic", "skorzystac",
)
NOT_ATTENDING = (
    "nie wezme* ~ udzial*", "nie wezmie ~ udzial*", "nie wezmiemy ~ udzial*", "nie wezma ~ udzial*",
    "nie bede obecn*", "nie bedzie obecn*", "nie bedziemy obecn*", "nie pojawie sie",
    "nie pojawimy sie", "nie przyjade", "nie przyjedziemy", "nie dolacze", "nie dolaczymy",
    "nie bede uczestniczyc", "nie bede uczestniczyl*", "nie bedzie uczestniczyc",
    "nie bedzie uczestniczyl*", "nie bedziemy uczestniczyc", "cannot attend", "can t attend",
    "won t be able to attend", "will not be able to attend", "unable to attend",
)
# Words between "nie" and CANNOT that keep the meaning ("nie jednak będę mógł" is rare, but
# "niestety nie dam jednak rady" is not): skipped.
CANNOT_FILLERS = ("jednak", "niestety", "juz", "wiec", "tym razem", "w tym terminie")
# Unsubscribing: a removal verb, then a mailing list or a database ("z Państwa listy
# mailingowej"), or a request for no more mail. "lista uczestników" is the event's: a cancellation.
REMOVE_VERBS = (
    "usun*", "wypis*", "wykresl*", "skresl*", "wykasow*", "wyrejestr*", "remove", "delete",
    "take", "zdjac", "zdjecie",
)
MAILING_LISTS = (
    "list* mailingow*", "list* dystrybucyjn*", "list* adresow*", "list* odbiorcow",
    "list* wysylkow*", "list* subskrybentow", "list* korespondencyjn*", "list* kontaktow*",
    "list* newsletter*", "list* mailowej", "list* e mailowej", "bazy*", "baz*", "mailingu",
    "mailingow*", "newslettera", "newsletterow", "subskrypcji", "rozdzielnika", "wysylki",
    "wysylek", "korespondencji", "mailing list", "distribution list", "list", "mailing",
)
UNSUBSCRIBE_PHRASES = (
    "nie chce* ~ otrzymywac", "nie chcemy ~ otrzymywac", "nie zycze* sobie ~ otrzymywa*",
    "nie zycze* sobie ~ przesylania", "nie zycze* sobie ~ wiadomosci", "nie zyczymy sobie",
    "prosze ~ nie przesylac", "prosze ~ nie wysylac", "prosze ~ nie kierowac",
    "prosze ~ nie przysylac", "prosimy ~ nie przysylac", "prosze o nieprzysylanie",
    "prosimy ~ nie przesylac", "prosimy ~ nie wysylac", "prosze o nieprzesylanie",
    "prosze o niewysylanie", "prosimy o nieprzesylanie", "prosimy o niewysylanie",
    "zaprzestani* ~ przesylania",
    "zaprzestani* ~ wysylania", "rezygnuje z otrzymywania", "rezygnujemy z otrzymywania",
    "rezygnacja z otrzymywania", "rezygnuje z newslettera", "rezygnuje z subskrypcji",
    "rezygnacja z newslettera", "rezygnacja z subskrypcji", "rezygnuje z mailingu",
    "wypisz", "wypiszcie", "wypisz* mnie", "wypisz* nas", "mnie wypisac", "nas wypisac",
    "wypisac mnie",    "wypisanie mnie", "wypisanie z newslettera", "unsubscribe me", "unsubscribe",
    "remove me", "stop sending", "do not send", "don t send", "no longer wish to receive",
    "no longer want to receive", "do not wish to receive", "don t want to receive",
)
# A request to stop mail is about what we send: its object, when it names one.
MAIL_NOUNS = (
    "korespondencj*", "wiadomosc*", "wiadomosci", "informacj*", "mail*", "e mail*",
    "newsletter*", "zaproszen*", "ofert*", "powiadomien", "na ten adres", "na moj adres",
    "na adres", "wiecej", "kolejnych", "dalszych", "tego typu", "emails", "messages",
)
# RODO (GDPR): consent withdrawn (art. 7(3)), an objection (art. 21) — an unsubscribe; and
# erasure (art. 17) — an unsubscribe staff must complete with `mailer forget`.
RODO_UNSUBSCRIBE = (
    "wycofuje ~ zgod*", "wycofujemy ~ zgod*", "cofam ~ zgod*", "cofniecie ~ zgod*",
    "wycofanie ~ zgod*", "odwoluje ~ zgod*", "sprzeciw wobec przetwarzania",
    "sprzeciw ~ przetwarzani*", "withdraw my consent", "object to the processing",
)
RODO_ERASURE = (
    "zadam ~ usuniecia", "zadanie ~ usuniecia", "usun* ~ moich danych", "usun* ~ moje dane",
    "usun* ~ danych osobowych", "usun* ~ dane osobowe", "prawo do bycia zapomnianym",
    "art 17 ~ rodo", "delete my personal data", "erase my personal data", "right to erasure",
)
# What someone else's footer says ("Aby anulować subskrypcję tej grupy…", "To unsubscribe…",
# a newsletter's "Jeśli nie chcesz otrzymywać…"): from one of these to the end of its
# paragraph, the text is not the writer's own request.
THIRD_PARTY_FOOTERS = (
    "aby anulowac subskrypcje", "aby zrezygnowac z subskrypcji", "aby zrezygnowac",
    "aby wypisac sie", "aby sie wypisac", "aby przestac otrzymywac", "w celu wypisania",
    "w celu rezygnacji", "jesli nie chcesz", "jezeli nie chcesz", "jesli nie chca panstwo",
    "jezeli nie chca panstwo", "jesli nie zyczysz sobie", "jezeli nie zyczysz sobie",
    "otrzymujesz te wiadomosc", "otrzymujesz ten e mail", "otrzymujesz ta wiadomosc",
    "otrzymales te wiadomosc", "otrzymalas te wiadomosc", "ta wiadomosc zostala wyslana do",
    "kliknij tutaj", "kliknij link", "kliknij w link", "kliknij ponizej", "kliknij tu",
    "wypisz sie", "mozesz sie wypisac", "mozesz zrezygnowac", "odpowiedz wypisz",
    "zarzadzaj subskrypcja", "zarzadzaj preferencjami", "to unsubscribe", "unsubscribe from",
    "you received this message because", "you are receiving this", "you received this email",
    "click here", "manage your subscription", "if you no longer wish", "if you do not wish",
    "if you don t want", "unsubscribe here",
)
# Automatic replies known by their words (headers stripped by a gateway). A receipt of a
# document system (EZD, ePUAP) or a no-reply notice is one by itself; an out-of-office or a
# canned reply needs its two halves (absent + until/whom to contact; thanks + we will answer).
AUTO_RECEIPTS = (
    "potwierdza ~ wplyw*", "potwierdzamy ~ wplyw*", "potwierdzenie wplywu",
    "potwierdzenie odbioru wiadomosci", "zarejestrowan* w systemie", "zostala zarejestrowana",
    "zostalo zarejestrowane", "zarejestrowano ~ przesylk*", "zarejestrowano ~ pismo",
    "zarejestrowano ~ wiadomosc", "urzedowe poswiadczenie przedlozenia",
    "urzedowe poswiadczenie odbioru", "wygenerowan* automatycznie",
    "automatycznie wygenerowan*", "automatyczne potwierdzenie", "wiadomosc automatyczn*",
    "this is an automated", "this is an automatic", "automatically generated",
)
# Words a receipt holds that a person may write too ("proszę podać znak sprawy"): two of them
# make a receipt, one does not.
AUTO_RECEIPT_HINTS = (
    "nadano ~ numer", "nadano ~ znak", "numer kancelaryjny", "znak sprawy", "upo", "upp",
    "skrzynki podawczej", "skrzynka podawcza", "ezd", "epuap", "data rejestracji",
    "data wplywu", "identyfikator dokumentu", "nie odpowiadaj", "prosimy ~ nie odpowiadac",
    "prosze ~ nie odpowiadac", "do not reply", "please do not reply",
)
AUTO_ABSENT = (
    "jestem nieobecn*", "bede nieobecn*", "jestem poza biurem", "przebywam ~ na urlopie",
    "przebywam ~ na zwolnieniu", "przebywam ~ w delegacji", "przebywam ~ na szkoleniu",
    "jestem na urlopie", "jestem na zwolnieniu", "jestem w delegacji", "poza biurem",
    "nie ma mnie w pracy", "nie ma mnie w biurze", "nie ma mnie", "nieobecnosc w pracy",
    "ograniczonym dostepem do poczty", "ograniczony dostep do poczty", "out of the office",
    "out of office", "on leave", "on vacation", "on holiday", "away from the office",
)
AUTO_ABSENT_DETAILS = (
    "do dnia", "wracam", "wroce", "po powrocie", "powrot*", "w dniach", "w sprawach pilnych",
    "w pilnych sprawach", "prosze kontaktowac sie", "prosze o kontakt", "prosimy o kontakt",
    "zastepstw*", "zastepuje mnie", "nie zostanie przekazana", "nie bedzie przekazywana",
    "odpowiem", "until", "i will reply", "i will respond", "urgent", "back on", "limited access",
)
AUTO_CANNED = (
    "dziekujemy za wiadomosc", "dziekuje za wiadomosc", "dziekujemy za przeslan*",
    "dziekujemy za kontakt", "dziekujemy za e mail", "thank you for your message",
    "thank you for your email", "thank you for contacting",
)
AUTO_CANNED_DETAILS = (
    "przekazana do wlasciwej", "przekazano do wlasciwej", "przekazana do merytoryczn*",
    "odpowiedz zostanie udzielona", "odpowiemy ~ w terminie", "odpowiemy ~ najszybciej",
    "w terminie wynikajacym", "kodeksu postepowania administracyjnego", "kpa",
    "zostanie rozpatrzon*", "we will respond", "we will get back", "we will reply",
)
# Words a machine's reply never holds: the invitation's business (a person answering it).
HUMAN_MARKERS = (
    "zglaszam", "zglaszamy", "zgloszeni*", "formularz*", "udzial*", "uczestnicz*",
    "rejestracj*", "warsztat*", "zaproszeni*", "pim",
)
# An event named by its date in a cancellation ("26.10", "26 października"): month names.
MONTHS_GENITIVE = (
    "stycznia", "lutego", "marca", "kwietnia", "maja", "czerwca", "lipca", "sierpnia",
    "wrzesnia", "pazdziernika", "listopada", "grudnia",
)
# A person asking something: no machine's receipt or out-of-office does ("proszę podać…").
HUMAN_ASKS = (
    "czy", "prosze podac", "prosze o podanie", "prosze o informacj*", "prosze o przeslanie",
    "prosze o potwierdzenie", "prosze o wyjasnienie", "prosze sprawdzic", "uprzejmie prosze o",
    "could you", "can you", "please let me know",
)
AUTO_MAX_WORDS = 160  # longer own text is a person writing, whatever it says
# Conditions and questions: a phrase after one of these in its clause is no request.
CONDITIONS = (
    "jesli", "jezeli", "gdyby", "gdybym", "gdybysmy", "w razie", "w przypadku", "o ile",
    "czy", "if", "whether", "ewentualnie", "moze",
)
# A "nie" before a withdrawal ("nie rezygnuję", "nie chcę rezygnować") cancels it.
NEGATIONS = (
    "nie", "nie chce", "nie chcemy", "nie zamierzam", "nie zamierzamy", "nie musze",
    "nie planuje", "not", "don t", "do not",
)


# --- turning phrases into patterns (on folded text) --------------------------------------------

# " ~ " in a phrase: up to three words between ("potwierdzam ~ udzial": "potwierdzam swój
# udział", "potwierdzam niniejszym nasz udział").
_WORDS_BETWEEN = r"[ \t]+(?:[^\s.,;:!?]+[ \t]+){0,3}"


def phrase_pattern(phrase: str) -> str:
    """A regex for one folded phrase: "." and "-" optional, a space one or more blanks (or
    none after a "."), "/" with blanks around it or not, " ~ " up to three words."""
    if " ~ " in phrase:
        return _WORDS_BETWEEN.join(phrase_pattern(part) for part in phrase.split(" ~ "))
    out: list[str] = []
    for i, char in enumerate(phrase):
        if char == " ":
            out.append(r"[ \t]*" if phrase[i - 1] in "./" or phrase[i + 1:i + 2] == "/"
                       else r"[ \t]+")
        elif char in ".-":
            out.append(re.escape(char) + "?")
        else:
            out.append(re.escape(char))
    return "".join(out)


def any_phrase(phrases: Iterable[str]) -> str:
    """One alternation of the phrases' patterns, the longest first (no group)."""
    return "|".join(phrase_pattern(p) for p in sorted(set(phrases), key=len, reverse=True))
