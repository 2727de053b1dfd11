"""The ``guichet`` command line: serve, demo, db upgrade, ingest."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from classifiers.corpus import CorpusError
from guichet import auth, logs, privacy, reports
from guichet.parts import open_store, web_pages
from guichet.settings import Settings, SettingsError, load_settings
from models import migrate
from models.reference import ReferenceDataError, load_reference_data, read_reference_file

if TYPE_CHECKING:
    from guichet.classify import Reader
    from intake.reading import OcrPool

# The service, the models and the channels are imported by the commands that use them:
# together they take seconds to import, which ``guichet user add`` need not wait for.

#: The demo's gestionnaire account (password = name), created only by `guichet demo`.
DEMO_USER = "demo"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guichet",
        description="Guichet: messaging and document intake for assistance back offices.",
    )
    parser.add_argument("--config", type=Path, help="settings file (default config/guichet.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run HTTP, SMTP intake and workers")
    serve_cmd.add_argument("--no-workers", action="store_true", help="run the front only")
    commands.add_parser(
        "worker", help="run job workers only (PostgreSQL; as many as needed, on any host)"
    )

    commands.add_parser("demo", help="load the demo contracts, beneficiaries and dossiers")

    load_cmd = commands.add_parser("load", help="load reference data from a TOML file")
    load_cmd.add_argument("file", type=Path)

    db_cmd = commands.add_parser("db", help="database maintenance")
    db_commands = db_cmd.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply the schema migrations")

    ingest_cmd = commands.add_parser(
        "ingest", help="take .eml files in through the same path as SMTP, then process them"
    )
    ingest_cmd.add_argument("files", nargs="+", type=Path, metavar="FILE.eml")
    ingest_cmd.add_argument(
        "--no-process", action="store_true", help="store only; leave processing to `serve`"
    )
    train_cmd = commands.add_parser(
        "train", help="train the intent and document-type models from labelled corpora"
    )
    train_cmd.add_argument("corpora", nargs="+", type=Path, metavar="CORPUS")
    train_cmd.add_argument(
        "--holdout", type=float, default=0.2, help="fraction of each corpus never trained on"
    )
    train_cmd.add_argument("--out", type=Path, help="model folder (default: the shipped models)")

    eval_cmd = commands.add_parser("eval", help="score the classifiers on a labelled corpus")
    eval_cmd.add_argument("corpora", nargs="+", type=Path, metavar="CORPUS")
    eval_cmd.add_argument(
        "--holdout", type=float, help="score only the held-out part (same fraction as train)"
    )
    eval_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    eval_cmd.add_argument("--models", type=Path, help="model folder (default: the shipped models)")

    classify_cmd = commands.add_parser(
        "classify", help="qualify files: language, intent or document type, entities"
    )
    classify_cmd.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    classify_cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    classify_cmd.add_argument(
        "--models", type=Path, help="model folder (default: the shipped models)"
    )
    corrections_cmd = commands.add_parser(
        "corrections", help="gestionnaires' corrections kept as training data"
    )
    corrections_actions = corrections_cmd.add_subparsers(
        dest="corrections_command", required=True, metavar="ACTION"
    )
    export_cmd = corrections_actions.add_parser(
        "export", help="write the corrections as a corpus folder for `guichet train`"
    )
    export_cmd.add_argument("folder", type=Path)

    user_cmd = commands.add_parser("user", help="gestionnaire accounts")
    user_actions = user_cmd.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    for action, text in (
        ("add", "create an account"),
        ("passwd", "set a new password (ends the user's open sessions)"),
        ("disable", "disable an account, its sessions and its API tokens"),
    ):
        action_cmd = user_actions.add_parser(action, help=text)
        action_cmd.add_argument("username")
        if action != "disable":
            action_cmd.add_argument(
                "--password-stdin", action="store_true", help="read the password from stdin"
            )
        if action == "add":
            action_cmd.add_argument("--role", choices=auth.ROLES, default="gestionnaire")
            action_cmd.add_argument("--name", default="", help="name shown in the inbox")
    token_cmd = commands.add_parser("token", help="API tokens for integrations")
    token_actions = token_cmd.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create_cmd = token_actions.add_parser("create", help="print a new token for USER")
    create_cmd.add_argument("username")
    create_cmd.add_argument("--label", default="", help="what the token is for")

    ged_cmd = commands.add_parser(
        "ged-export", help="write a dossier's documents and metadata to the GED export folder"
    )
    ged_cmd.add_argument("ref", help="dossier reference, e.g. AS-2026-000001")

    subject_cmd = commands.add_parser(
        "export-subject", help="everything held about one person, as a ZIP (access request)"
    )
    subject_cmd.add_argument("identifier", metavar="EMAIL|PHONE")
    subject_cmd.add_argument(
        "--output", type=Path, help="ZIP file to write (default ./subject-<digest>.zip)"
    )
    purge_cmd = commands.add_parser(
        "purge", help="delete dossiers closed more than retention_days ago, with their data"
    )
    purge_cmd.add_argument("--dry-run", action="store_true", help="only say what would go")

    report_cmd = commands.add_parser(
        "report", help="activity report (tableaux de synthèse) over a date range"
    )
    report_cmd.add_argument("--from", dest="since", required=True, metavar="YYYY-MM-DD")
    report_cmd.add_argument("--to", dest="until", required=True, metavar="YYYY-MM-DD")
    report_cmd.add_argument("--format", choices=("csv", "html", "xlsx"), default="csv")
    report_cmd.add_argument("--lang", choices=("fr", "en"), default="fr")
    report_cmd.add_argument("--out", type=Path, help="file to write (default: standard output)")
    return parser


async def _ged_export(settings: Settings, ref: str) -> int:
    from channels.ged import DossierNotFound, export_dossier

    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        written = await export_dossier(store, settings.folder(settings.ged_export), ref=ref)
    except DossierNotFound:
        print(f"guichet: no dossier {ref}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    for path in written:
        print(path)
    return 0


async def _export_subject(settings: Settings, identifier: str, output: Path | None) -> int:
    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        result = await privacy.export_subject(store, identifier, output)
    except OSError as exc:
        print(f"guichet: cannot write the export: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    if result is None:
        print("guichet: nothing is held about this person", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


async def _purge(settings: Settings, dry_run: bool) -> int:
    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        report = await privacy.purge_expired(store, settings.retention_days, dry_run=dry_run)
    finally:
        await store.close()
    for line in privacy.purge_lines(report):
        print(line)
    return 0


async def _report(settings: Settings, args: argparse.Namespace) -> int:
    since, until = reports.parse_range(args.since, args.until, date.today())
    if args.format == "xlsx" and args.out is None:
        raise reports.ReportError("--format xlsx needs --out FILE")
    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        async with store.sessions() as session:
            report = await reports.build_report(session, since, until)
    finally:
        await store.close()
    if args.format == "xlsx":
        reports.to_xlsx(report, args.out, args.lang)
        return 0
    if args.format == "csv":
        content = reports.to_csv(report, args.lang)
    else:
        pages = web_pages(settings.templates_dir, strict=False)
        content = reports.to_html(report, pages, args.lang)
    if args.out is None:
        sys.stdout.write(content)
    else:
        args.out.write_text(content, encoding="utf-8")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise auth.AccessError("the two passwords differ")
    return first


async def _accounts(settings: Settings, args: argparse.Namespace) -> None:
    """``guichet user …`` and ``guichet token create``; raises AccessError with the reason."""
    password = None
    if args.command == "user" and args.user_command in ("add", "passwd"):
        password = _read_password(args.password_stdin)
    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        async with store.sessions() as session, session.begin():
            if args.command == "token":
                print(await auth.create_token(session, args.username, label=args.label))
            elif args.user_command == "add":
                assert password is not None
                user = await auth.add_user(
                    session, args.username, password, role=args.role, display_name=args.name
                )
                print(f"user {user.username} added ({user.role})")
            elif args.user_command == "passwd":
                assert password is not None
                await auth.set_password(session, args.username, password)
                print(f"password of {args.username} changed; their sessions are closed")
            else:
                await auth.disable_user(session, args.username)
                print(f"user {args.username} disabled")
    finally:
        await store.close()


async def _demo(settings: Settings) -> None:
    await _load(settings, settings.config_dir / "demo.toml")
    store = open_store(settings)
    try:
        async with store.sessions() as session, session.begin():
            # Only the demo has this account: a real deployment starts with none.
            if await auth.check_password(session, DEMO_USER, DEMO_USER) is None:
                try:
                    await auth.add_user(
                        session, DEMO_USER, DEMO_USER, display_name="Démo", actor="demo"
                    )
                    print(f"user {DEMO_USER} (password {DEMO_USER}) added")
                except auth.AccessError as exc:
                    print(f"guichet: demo user not added: {exc}", file=sys.stderr)
    finally:
        await store.close()


async def _export_corrections(settings: Settings, folder: Path) -> None:
    from models.corrections import export_corpus

    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        async with store.sessions() as session:
            count = await export_corpus(session, folder)
    finally:
        await store.close()
    print(f"{count} corrected item(s) written to {folder}")


def _reader(settings: Settings, pool: OcrPool) -> Reader:
    from guichet.classify import Reader
    from guichet.service import reading_limits

    return Reader(pool, reading_limits(settings), settings.home / "cache" / "texts")


async def _train(
    settings: Settings, corpora: Sequence[Path], holdout: float, out: Path | None
) -> None:
    from classifiers.corpus import read_corpus, split
    from guichet.classify import train_models, training_texts
    from intake.reading import OcrPool

    items = []
    for corpus in corpora:
        train, held = split(read_corpus(corpus), holdout)
        print(f"{corpus}: training on {len(train)} items, {len(held)} held out")
        items.extend(train)
    pool = OcrPool(settings.ocr_pool_size)
    try:
        data = await training_texts(items, _reader(settings, pool))
    finally:
        pool.shutdown()
    target = out or settings.models_dir
    counts = train_models(data, target, [p.name for p in corpora])
    for task, examples in counts.items():
        print(f"{task}: {sum(examples.values())} examples, {len(examples)} classes -> {target}")


async def _classify_or_eval(settings: Settings, args: argparse.Namespace) -> int:
    from classifiers.qualify import Qualifier
    from guichet.classify import FileClassifier, evaluate, expand_paths, format_report
    from intake.reading import OcrPool

    qualifier = Qualifier(args.models or settings.models_dir, settings.default_language)
    pool = OcrPool(settings.ocr_pool_size)
    try:
        classifier = FileClassifier(qualifier, _reader(settings, pool))
        if args.command == "eval":
            report = await evaluate(classifier, args.corpora, args.holdout)
            print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
            return 0
        missing = [p for p in args.paths if not p.exists()]
        paths = expand_paths(p for p in args.paths if p.exists())
        for path in missing:
            print(f"guichet: {path}: no such file or folder", file=sys.stderr)
        for result in await classifier.classify_paths(paths):
            if args.json:
                print(json.dumps(result, ensure_ascii=False))
            else:
                label = result["intent"] or result["doc_type"] or "-"
                print(
                    f"{result['file']}: {result['kind']} {label} {result['language']}"
                    f" {result['entities']}"
                )
        return 1 if missing else 0
    finally:
        pool.shutdown()


async def _load(settings: Settings, path: Path) -> None:
    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    try:
        async with store.sessions() as session, session.begin():
            report = await load_reference_data(session, read_reference_file(path), actor="cli")
    finally:
        await store.close()
    print(f"{path.name}: {report.created} created, {report.updated} already there")


async def _ingest(settings: Settings, files: Sequence[Path], process: bool) -> int:
    from channels.email_smtp import ingest_email
    from guichet.service import build_runner
    from intake.reading import OcrPool
    from models.store import Envelope

    migrate.upgrade(settings.effective_database_url)
    store = open_store(settings)
    failures = 0
    ocr = OcrPool(settings.ocr_pool_size) if process else None
    try:
        for path in tqdm(files, desc="ingest", unit="mail", disable=len(files) < 2):
            try:
                raw = path.read_bytes()
            except OSError as exc:
                tqdm.write(f"{path}: cannot read: {exc.strerror}")
                failures += 1
                continue
            accepted, _ = await ingest_email(store, raw, Envelope(peer=f"file:{path.name}"))
            state = "duplicate of" if accepted.duplicate else "stored as"
            # Not the subject: it is the sender's words, and this output ends up in logs.
            tqdm.write(f"{path}: {state} contact {accepted.contact_id}")
        if ocr is not None:
            runner = build_runner(settings, store, ocr)
            ran = await runner.run_pending()
            print(f"processed {ran} job(s)")
    finally:
        if ocr is not None:
            ocr.shutdown()
        await store.close()
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure_logging(args.verbose)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"guichet: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            from guichet.service import serve

            asyncio.run(serve(settings, workers=not args.no_workers))
        elif args.command == "worker":
            from guichet.service import work

            asyncio.run(work(settings))
        elif args.command == "db":
            migrate.upgrade(settings.effective_database_url)
            print("database is at the latest schema")
        elif args.command == "demo":
            asyncio.run(_demo(settings))
        elif args.command in ("user", "token"):
            asyncio.run(_accounts(settings, args))
        elif args.command == "load":
            asyncio.run(_load(settings, args.file))
        elif args.command == "ingest":
            return asyncio.run(_ingest(settings, args.files, process=not args.no_process))
        elif args.command == "train":
            asyncio.run(_train(settings, args.corpora, args.holdout, args.out))
        elif args.command == "corrections":
            asyncio.run(_export_corrections(settings, args.folder))
        elif args.command == "ged-export":
            return asyncio.run(_ged_export(settings, args.ref))
        elif args.command == "export-subject":
            return asyncio.run(_export_subject(settings, args.identifier, args.output))
        elif args.command == "purge":
            return asyncio.run(_purge(settings, args.dry_run))
        elif args.command in ("eval", "classify"):
            return asyncio.run(_classify_or_eval(settings, args))
        elif args.command == "report":
            return asyncio.run(_report(settings, args))
    except (
        ReferenceDataError,
        CorpusError,
        auth.AccessError,
        reports.ReportError,
        privacy.SubjectError,
    ) as exc:
        print(f"guichet: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
