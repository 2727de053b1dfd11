"""Guess a dossier's claim type and the event's cause from what a beneficiary wrote."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["CLAIM_TYPES", "ClaimGuess", "guess_cause", "guess_claim_type", "plain"]

#: The claim types of config/claim_types.toml; the scorer knows no others.
CLAIM_TYPES = (
    "medical_costs_abroad",
    "towing",
    "replacement_vehicle",
    "hotel_extended_stay",
    "early_return",
    "taxi",
    "baggage",
    "trip_cancellation",
    "home_assistance",
)

# Patterns are matched on plain text (lower case, no accents, doubled letters squeezed to one,
# see ``plain``), so "hôpital", "HOPITAL" and "hoppital" read the same; write them without
# accents (doubled letters are squeezed in the patterns too, and "ill" would read "il", the
# French pronoun, so such words are left out). They start at a word boundary and are
# stems unless they end with \b. French, English, Spanish, Italian and German, with the SMS
# spellings seen in the corpus (kc, ds, remorkage...).
# Weights: 3 for words that name the claim type on their own, 2 for strong hints, 1 for
# context that several claim types share.
_CLAIM_WORDS: dict[str, tuple[tuple[str, int], ...]] = {
    "medical_costs_abroad": (
        (r"hospitali|hopital|hospital|clinique|clinic|ospedal|krankenhaus|urgences", 3),
        (r"frais medicaux|medical (?:costs|bils?|expenses)|gastos medicos|spese mediche", 3),
        (r"medecin|docteur|doctor|medico|arzt|pharmac|farmac|apothek|dentist|soins", 2),
        (r"consultation|ordonance|prescription|radio|urgence|emergency|ambulanc", 2),
        (r"malade|maladie|sick|enferm|malat|krank|fievre|fever|fiebre|febre", 1),
        (r"chute|tombe|blese|fractur|injur|broke my|herid|ferit|verletz|entorse", 1),
    ),
    "towing": (
        (r"remorqu|remork|depaneu|depanage|depaner|tow(?:ing|ed| truck)?\b|grua\b|remolc", 3),
        (r"carro attrezi|sofcorso strad|abschlep|pannenhilfe|breakdown (?:service|truck)", 3),
        (r"en pane|tombe en pane|broke down|broken down|averia|averiad|in panne|guasto", 2),
        (r"pane\b|panne\b|batterie|battery|bateria|crevaison|flat tyre|flat tire|pneu", 1),
        (r"voiture|vehicule|auto\b|car\b|coche|macchina|wagen|moteur|engine|motor", 1),
        (r"autoroute|motorway|highway|autopista|autostrada|autobahn|garage|garagist", 1),
    ),
    "replacement_vehicle": (
        (r"vehicule de remplacement|voiture de remplacement|replacement (?:car|vehicle)", 3),
        (r"vehiculo de sustitucion|coche de sustitucion|auto sostitutiva|ersatzwagen", 3),
        (r"voiture de location|location de voiture|loueur|rental car|car hire|hire car", 2),
        (r"alquiler de coche|noleggio|mietwagen|louer une voiture|loue une voiture", 2),
        (r"europcar|hertz|avis\b|sixt|enterprise rent", 2),
    ),
    "hotel_extended_stay": (
        (r"prolongation (?:de|du) sejour|prolonger (?:mon|notre|le) sejour|nuits? sup", 3),
        (r"extended (?:hotel )?stay|extra nights?|extend(?:ed)? (?:my|our) stay", 3),
        (r"prolongacion de (?:la )?estancia|noches? extra|notti in piu|verlangerung", 3),
        (r"hotel|albergo|alberg|hostal|nuitee|nuits?\b|nights?\b|noches|notti|ubernacht", 1),
    ),
    "early_return": (
        (r"retour anticipe|rentrer plus tot|rentre plus tot|rapatri|early return", 3),
        (r"return(?:ed)? home early|come home early|came back early|cut (?:short|our trip)", 3),
        (r"regreso anticipado|vuelta anticipada|rientro anticipato|vorzeitige ruckreise", 3),
        (r"deces|decede|obseque|funerail|death|died|passed away|fallec|mort[oe]\b", 2),
        (r"billet retour|return ticket|billete de vuelta|biglietto di ritorno", 1),
    ),
    "taxi": (
        (r"taxi|taxis|vtc\b|uber\b|cab\b|bolt\b", 3),
        (r"course|fare|carrera|corsa|fahrpreis", 1),
    ),
    "baggage": (
        (r"bagage|baggage|luggage|equipaje|bagagli|gepack|valise|suitcase|maleta|koffer", 3),
        (r"\bpir\b|irregularite bagage|property irregularity|tapis bagage|carousel", 3),
        (r"sac a dos|backpack|sac\b|bag\b|bolso|borsa\b|tasche", 1),
        (r"perdu|egare|lost|perdid|smarrit|verloren|endomage|damaged|danad|danneggiat", 1),
    ),
    "trip_cancellation": (
        (r"annulation (?:de|du|d'un|de mon|de notre) (?:voyage|sejour|sejours|circuit)", 3),
        (r"annule (?:mon|notre|le) (?:voyage|sejour|depart)|annuler (?:mon|notre|le) voyage", 3),
        (r"trip cancel|cancel(?:led|ed)? (?:my|our|the) (?:trip|holiday|vacation|booking)", 3),
        (r"cancelacion del viaje|cancelar (?:el|mi|nuestro) viaje|annullamento del viaggio", 3),
        (r"reiseruckt|reise storn|storno", 3),
        (r"frais d'annulation|cancellation fees?|gastos de cancelacion|penali", 2),
        (r"annul|cancel|anul|stornier", 1),
        (r"voyage|sejour|trip|holiday|vacation|viaje|viaggio|reise|reservation|booking", 1),
    ),
    "home_assistance": (
        (r"cambriol|burglar|break-in|broke into|robo en (?:casa|mi casa)|einbruch", 3),
        (r"degat des eaux|degats des eaux|water damage|danos por agua|danni da acqua", 3),
        (r"wasserschaden|fuite d'eau|fuite|leak|inondation|flood|fuga de agua|perdita", 2),
        (r"serrur|locksmith|cerrajer|fabbro|schlusseldienst|plombier|plumber|fontaner", 3),
        (r"idraulic|klempner|vitrier|glazier|cristaler|vetraio|glaser|electricien", 3),
        (r"maison|domicile|logement|appartement|home\b|house|flat\b|casa|wohnung|haus\b", 1),
        (r"porte|door|puerta|porta|tur\b|fenetre|window|ventana|finestra|serure|cle\b", 1),
    ),
}

_CAUSE_WORDS: tuple[tuple[str, str], ...] = (
    # "vol" is also a flight in French: only its unambiguous forms say theft.
    (
        "burglary",
        r"cambriol|burglar|break-in|broke into|robo en (?:casa|mi casa)|furto in casa|einbruch",
    ),
    (
        "theft",
        r"vole(?:e|s|es)?\b|vol (?:de|du|d')(?: mon| ma| mes| notre| nos)? ?"
        r"(?:sac|valise|bagage|vehicule|voiture|portefeuille|telephone|papiers)|"
        r"victime d'un vol|plainte pour vol|derobe|stolen|theft|stole\b|robad|robo\b|"
        r"me robaron|rubat|furto|gestohlen|diebstahl",
    ),
    (
        "vandalism",
        r"vandal|vitre brise|degrade|tag(?:ue|s)? sur|saccag|destrozad|danneggiat da ignoti",
    ),
    (
        "water_damage",
        r"degats? des eaux|water damage|fuite|leak|inondation|flood|fuga de agua|"
        r"danni da acqua|wasserschaden|perdita d'acqua",
    ),
    ("fire", r"incendi|\bfeu\b|fire\b|brand\b|brule|burn(?:ed|t)\b|quemad|bruciat"),
    (
        "breakdown",
        r"en pane|pane\b|panne\b|breakdown|broke down|broken down|averi|guast|"
        r"batterie|battery|bateria|moteur|engine failure|crevaison|flat tyre|flat tire",
    ),
    (
        "accident",
        r"accident|fosse\b|collision|accroch|carambol|crash|choque|incidente|unfall|zusammenst",
    ),
    (
        "injury",
        r"chute|tombe|blese|fractur|entorse|injur|broke my|fell\b|herid|caida|me cai|ferit|"
        r"caduto|verletz|gesturzt|bruch",
    ),
    (
        "illness",
        r"malade|maladie|fievre|infection|intoxi|gastro|sick|illness|fever|enferm|"
        r"fiebre|malat|febbre|krank(?!enhaus)|fieber|appendic|covid",
    ),
    ("death", r"deces|decede|obseque|death|died|passed away|fallec|morto|morta|verstorben"),
    (
        "loss",
        r"perdu|egare|lost\b|perdid|perdimos|perdi\b|smarrit|verloren|n'est pas arrive|"
        r"did not arrive|never arrived|no llego",
    ),
)

_DOUBLED = re.compile(r"([a-z])\1+")


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z])(?:" + _DOUBLED.sub(r"\1", pattern) + ")")


_COMPILED_CLAIMS = {
    code: tuple((_compile(p), w) for p, w in words) for code, words in _CLAIM_WORDS.items()
}
_COMPILED_CAUSES = tuple((c, _compile(p)) for c, p in _CAUSE_WORDS)
_TIE_ORDER = (
    "taxi",
    "replacement_vehicle",
    "hotel_extended_stay",
    "early_return",
    "trip_cancellation",
    "baggage",
    "towing",
    "home_assistance",
    "medical_costs_abroad",
)
_SPACES = re.compile(r"\s+")
# SMS shorthand, read as the words it stands for before matching.
_SMS = (
    (re.compile(r"(?<![a-z])ds(?![a-z])"), "dans"),
    (re.compile(r"(?<![a-z])kc(?![a-z])"), "casse"),
    (re.compile(r"(?<![a-z])hosto(?![a-z])"), "hopital"),
    (re.compile(r"(?<![a-z])bagag(?![a-z])"), "bagage"),
    (re.compile(r"(?<![a-z])tel(?![a-z])"), "telephone"),
    (re.compile(r"(?<![a-z])voit(?![a-z])"), "voiture"),
)


@dataclass(frozen=True)
class ClaimGuess:
    claim_type: str | None
    confidence: float
    scores: dict[str, int]


def plain(text: str) -> str:
    """Lower case, no accents, one space, letters doubled by hurried typing squeezed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    stripped = stripped.replace("’", "'").replace("œ", "oe").replace("ß", "ss")
    stripped = _DOUBLED.sub(r"\1", stripped)
    stripped = _SPACES.sub(" ", stripped)
    for pattern, word in _SMS:
        stripped = pattern.sub(word, stripped)
    return stripped


def guess_claim_type(text: str) -> ClaimGuess:
    """The most likely claim type and how sure the guess is, in [0, 1].

    Every pattern counts once however often it occurs, so a long message repeating one word
    does not outweigh two distinct hints. Confidence grows with the winning score (one word
    naming the claim type is fairly sure) and shrinks with the runner-up's share.
    """
    words = plain(text)
    scores = {
        code: sum(weight for pattern, weight in patterns if pattern.search(words))
        for code, patterns in _COMPILED_CLAIMS.items()
    }
    # On a tie the narrower claim type wins: a taxi to the hospital is a taxi claim.
    ranked = sorted(scores.items(), key=lambda item: (-item[1], _TIE_ORDER.index(item[0])))
    (best, top), (_, second) = ranked[0], ranked[1]
    if top == 0:
        return ClaimGuess(None, 0.0, scores)
    strength = 1 - math.exp(-top / 2.5)
    margin = (top - second) / top
    confidence = strength * (0.5 + 0.5 * margin)
    return ClaimGuess(best, round(confidence, 2), scores)


def guess_cause(text: str) -> str | None:
    """What caused the event when the text says so (first listed cause wins), else None."""
    words = plain(text)
    for cause, pattern in _COMPILED_CAUSES:
        if pattern.search(words):
            return cause
    return None
