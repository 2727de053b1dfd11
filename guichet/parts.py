"""The pieces several parts of the service build from the settings, built in one place."""

from __future__ import annotations

from pathlib import Path

import jinja2
from sqlalchemy.engine import make_url

from guichet.settings import Settings
from intake.coverage import load_claim_types, load_rates
from intake.evaluate import ReferenceRules
from models.store import Store
from responders.acknowledge import MailIdentity


def mail_identity(settings: Settings) -> MailIdentity:
    """Who Guichet writes as, for the workers' replies and a gestionnaire's alike."""
    return MailIdentity(
        display_name=settings.mail_from_name,
        local_part=settings.mail_from_local,
        domain=settings.reply_domain,
        own_domains=settings.mail_domains,
    )


def reference_rules(settings: Settings) -> ReferenceRules:
    """Claim types, exchange rates and the document threshold the dossier evaluation uses."""
    return ReferenceRules(
        claim_types=load_claim_types(settings.config_dir / "claim_types.toml"),
        rates=load_rates(settings.config_dir / "exchange_rates.toml"),
        doc_threshold=settings.review_threshold_doc_type,
    )


def web_pages(templates_dir: Path, *, strict: bool = True) -> jinja2.Environment:
    """The Jinja2 environment of the web pages (templates/web), escaping everything.

    ``strict`` makes a missing value an error; the search and report pages leave optional
    words out of their text tables and rely on them rendering empty.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir / "web"),
        autoescape=True,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
    )


def uses_worker_pool(settings: Settings) -> bool:
    """On PostgreSQL, jobs and periodic work run on procrastinate workers (guichet/workers.py),
    any number of processes on any number of hosts; with SQLite, in the one service process."""
    return make_url(settings.effective_database_url).get_backend_name() == "postgresql"


def open_store(settings: Settings) -> Store:
    settings.home.mkdir(parents=True, exist_ok=True)
    return Store.open(settings.effective_database_url, settings.blob_dir, settings.min_free_bytes)
