"""The claim type and cause guessed from varied wording, languages, typos and SMS spelling."""

from __future__ import annotations

import pytest

from classifiers.claim_type import CLAIM_TYPES, guess_cause, guess_claim_type
from guichet.settings import PROJECT_ROOT
from intake.coverage import load_claim_types

CASES = [
    # (text, claim type, cause)
    (
        "J'ai été hospitalisé à Barcelone après une chute, frais avancés",
        "medical_costs_abroad",
        "injury",
    ),
    (
        "Bonjour, j'ai du aller aux urgences a Rome, fievre et infection",
        "medical_costs_abroad",
        "illness",
    ),
    ("I was admitted to hospital in Lisbon, dentist bills attached", "medical_costs_abroad", None),
    (
        "Tuve que ir al hospital en Lisboa, gastos médicos pagados por mí",
        "medical_costs_abroad",
        None,
    ),
    ("Ricovero in ospedale a Madrid, spese mediche", "medical_costs_abroad", None),
    ("Ich war im Krankenhaus in Wien, Arztrechnung anbei", "medical_costs_abroad", None),
    (
        "Ma voiture est tombée en panne sur l'autoroute, remorquée par le dépanneur",
        "towing",
        "breakdown",
    ),
    ("ma voit est en pane sur l A7, la depaneuse l a remorkee au garage", "towing", "breakdown"),
    ("My car broke down on the motorway and was towed", "towing", "breakdown"),
    ("Se averió el coche, la grúa lo llevó al taller", "towing", "breakdown"),
    ("Auto in panne in autostrada, carro attrezzi chiamato", "towing", "breakdown"),
    ("Accident sur le parking, véhicule remorqué", "towing", "accident"),
    (
        "On m'a prêté un véhicule de remplacement pendant 5 jours, facture du loueur",
        "replacement_vehicle",
        None,
    ),
    (
        "Replacement car from Hertz for 4 days after the theft of my car",
        "replacement_vehicle",
        "theft",
    ),
    (
        "Prolongation de séjour à l'hôtel, 3 nuits supplémentaires sur avis du médecin",
        "hotel_extended_stay",
        None,
    ),
    ("We had to pay two extra nights at the hotel", "hotel_extended_stay", None),
    ("Retour anticipé suite au décès de mon père", "early_return", "death"),
    ("We had to return home early, my mother passed away", "early_return", "death"),
    ("J'ai pris un taxi de l'hôpital jusqu'à l'hôtel", "taxi", None),
    ("Cogí un taxi del aeropuerto", "taxi", None),
    ("On m'a volé ma valise à l'aéroport", "baggage", "theft"),
    ("Ma valise n'est jamais arrivée, bagage perdu, PIR fait", "baggage", "loss"),
    ("My suitcase was lost by the airline", "baggage", "loss"),
    ("Perdimos la maleta en el aeropuerto", "baggage", "loss"),
    ("Koffer gestohlen am Bahnhof", "baggage", "theft"),
    (
        "Annulation de mon voyage pour raison médicale, frais d'annulation",
        "trip_cancellation",
        None,
    ),
    ("I had to cancel my trip because I was sick", "trip_cancellation", "illness"),
    ("Cancelación del viaje por enfermedad", "trip_cancellation", "illness"),
    ("Cambriolage chez moi cette nuit, le serrurier est venu", "home_assistance", "burglary"),
    (
        "Dégât des eaux dans la cuisine, fuite, le plombier est passé",
        "home_assistance",
        "water_damage",
    ),
    ("degat des eaux ds l appart, plombier venu", "home_assistance", "water_damage"),
    ("Burglary at my house, the locksmith changed the lock", "home_assistance", "burglary"),
    ("Incendie dans la cuisine de la maison, vitrier et électricien", "home_assistance", "fire"),
]


@pytest.mark.parametrize(("text", "claim_type", "cause"), CASES)
def test_claim_type_and_cause(text: str, claim_type: str, cause: str | None) -> None:
    guess = guess_claim_type(text)
    assert guess.claim_type == claim_type, guess.scores
    assert 0.0 < guess.confidence <= 1.0
    assert guess_cause(text) == cause


def test_nothing_said_is_no_guess() -> None:
    guess = guess_claim_type("Bonjour, merci pour votre réponse.")
    assert (guess.claim_type, guess.confidence) == (None, 0.0)
    assert guess_cause("Bonjour, merci pour votre réponse.") is None


def test_a_flight_is_not_a_theft() -> None:
    assert guess_cause("Mon vol retour a été annulé") is None


def test_clear_wording_is_surer_than_an_ambiguous_one() -> None:
    clear = guess_claim_type("Ma voiture est en panne, remorquage par la dépanneuse")
    ambiguous = guess_claim_type("Taxi pour aller à l'hôpital")
    assert clear.confidence > 0.5 > ambiguous.confidence


def test_every_claim_type_of_the_configuration_is_known() -> None:
    configured = load_claim_types(PROJECT_ROOT / "config" / "claim_types.toml")
    assert set(CLAIM_TYPES) == set(configured)
    assert {c for _, c, _ in CASES} == set(CLAIM_TYPES)
