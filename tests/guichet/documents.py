"""Realistic claim documents as text-layer PDFs, for scenario tests through the real service."""

from __future__ import annotations

import io

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

TEXTS = {
    "medical_invoice": [
        "CLINICA SANT JORDI - Carrer de Balmes 112 - 08008 Barcelona",
        "FACTURE / FACTURA N° 2026-4471",
        "Patient : M. Jean DUPONT",
        "Date : 03/10/2026",
        "Consultation urgences                      180,00 EUR",
        "Radiographie poignet gauche                 95,00 EUR",
        "Plâtre et soins                            210,00 EUR",
        "Pharmacie                                   35,40 EUR",
        "TOTAL TTC A PAYER                          520,40 EUR",
        "Facture acquittée le 03/10/2026 par carte bancaire",
    ],
    "medical_certificate": [
        "Dr. Marta Puig - Médecin urgentiste - Clinica Sant Jordi",
        "CERTIFICAT MÉDICAL",
        "Je soussignée, docteur en médecine, certifie avoir examiné ce jour",
        "M. Jean DUPONT, né le 12/04/1971, qui présente une fracture du poignet gauche",
        "consécutive à une chute. Immobilisation plâtrée pour 6 semaines.",
        "Arrêt des activités sportives.",
        "Certificat remis en main propre pour servir et valoir ce que de droit.",
        "Fait à Barcelone, le 03/10/2026",
    ],
    "social_security_statement": [
        "Assurance Maladie - CPAM du Rhône",
        "RELEVÉ DE VOS REMBOURSEMENTS - Décompte du 20/10/2026",
        "Assuré : M. Jean DUPONT   N° de sécurité sociale : 1 71 04 69 123 456 78",
        "Soins reçus à l'étranger - Espagne - Clinica Sant Jordi",
        "Montant des soins : 520,40 EUR   Base de remboursement : 300,00 EUR",
        "Taux de remboursement : 70 %",
        "Total remboursé : 210,00 EUR   versé le 20/10/2026 sur votre compte",
    ],
    "bank_details": [
        "RELEVÉ D'IDENTITÉ BANCAIRE",
        "Titulaire du compte : M. Jean DUPONT - 14 rue des Lilas 69003 Lyon",
        "Domiciliation : BANQUE EXEMPLE LYON PART DIEU",
        "Code banque  Code guichet  Numéro de compte  Clé RIB",
        "30006 00001 12345678901 89",
        "IBAN : FR76 3000 6000 0112 3456 7890 189",
        "BIC : AGRIFRPP",
    ],
}


def pdf(doc_type: str) -> bytes:
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    page.setFont("Helvetica", 10)
    y = 800
    for line in TEXTS[doc_type]:
        page.drawString(50, y, line)
        y -= 18
    page.showPage()
    page.save()
    return buffer.getvalue()
