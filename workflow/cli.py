"""The ``counterpart`` command line: render letters, print schemas, run batches."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .convert import PdfConverter
from .db import DATA_DIR_ENV, DATABASE_URL_ENV
from .errors import CounterpartError, TermsError
from .files import write_atomic
from .render import render_docx, render_pdf
from .schema import json_schema, list_templates, load_template, sample_terms, validate_terms

__all__ = ["cli", "main"]

EXIT_INVALID = 2


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _load(template: str):
    try:
        return load_template(template)
    except CounterpartError as exc:
        choices = ", ".join(list_templates()) or "none"
        _fail(f"{exc} Templates available: {choices}.")


def _read_terms(source: str) -> Any:
    name = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{name}: cannot be read ({getattr(exc, 'strerror', None) or exc}).")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Draft letter agreements from their terms and execute them in counterparts."""


@cli.command()
def templates() -> None:
    """List the templates and what each is for."""
    for name in list_templates():
        spec = load_template(name)
        click.echo(f"{name}\t{spec.title}")


@cli.command()
@click.argument("template")
@click.option("--terms", "terms_source", required=True, metavar="FILE.json",
              help="The terms as a JSON object; '-' reads standard input.")
@click.option("--docx", "docx_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .docx.")
@click.option("--pdf", "pdf_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the PDF.")
def render(template: str, terms_source: str, docx_out: Path | None,
           pdf_out: Path | None) -> None:
    """Render one letter from its terms as .docx and/or PDF.

    Invalid terms exit with status 2 and one line per bad field on standard error; no file is
    written.
    """
    spec = _load(template)
    if not docx_out and not pdf_out:
        _fail("Give --docx OUT.docx, --pdf OUT.pdf, or both.")
    for out in (docx_out, pdf_out):
        if out and not out.parent.is_dir():
            _fail(f"{out}: the folder {out.parent} does not exist.")
    raw = _read_terms(terms_source)
    try:
        terms = validate_terms(spec, raw)
    except TermsError as exc:
        _fail("\n".join(f"{key}: {message}" for key, message in exc.errors.items()))
    try:
        docx = render_docx(spec, terms)
        pdf = render_pdf(docx) if pdf_out else None
    except CounterpartError as exc:
        _fail(str(exc), 1)
    for out, data in ((docx_out, docx), (pdf_out, pdf)):
        if out is None or data is None:
            continue
        try:
            write_atomic(out, data)
        except OSError as exc:
            _fail(f"{out}: could not be written ({exc.strerror or exc}); any earlier file there "
                  "is unchanged.", 1)
        click.echo(f"wrote {out}")


@cli.command()
@click.argument("template")
def schema(template: str) -> None:
    """Print the JSON Schema of a template's terms."""
    click.echo(json.dumps(json_schema(_load(template)), indent=2))


@cli.command("sample-terms")
@click.argument("template")
def sample_terms_command(template: str) -> None:
    """Print a template's example terms (the reference letter's) as JSON."""
    click.echo(json.dumps(sample_terms(_load(template)), indent=2))


@cli.command()
@click.argument("template")
@click.option("--csv", "csv_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="One letter per row; the header row names the term keys.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the .docx and PDF files.")
@click.option("--processes", type=int, default=None,
              help="LibreOffice processes to run at once (default: one per core).")
@click.option("--no-pdf", is_flag=True, help="Write only the .docx files.")
def batch(template: str, csv_path: Path, out_dir: Path, processes: int | None,
          no_pdf: bool) -> None:
    """Render one letter per CSV row; list fields use ';', booleans true/false.

    A bad row is reported with its row number and fields while the others finish; the exit
    status is 1 if any row failed.
    """
    from tqdm import tqdm

    from .batch import read_terms_csv, run_batch

    spec = _load(template)
    try:
        total = sum(1 for _ in read_terms_csv(spec, csv_path))
    except CounterpartError as exc:
        _fail(str(exc))
    started = time.perf_counter()
    with PdfConverter(processes=processes or os.cpu_count() or 1) as converter, \
            tqdm(total=total, unit="letter", file=sys.stderr, disable=None) as bar:
        def done(result) -> None:
            bar.update(1)
            if not result.ok:
                for key, message in result.errors.items():
                    tqdm.write(f"row {result.row}: {key}: {message}", file=sys.stderr)

        report = run_batch(spec, csv_path, out_dir, converter, pdf=not no_pdf, on_done=done)
    elapsed = time.perf_counter() - started
    ok = len(report.results) - len(report.failed)
    per = f", {elapsed / max(ok, 1):.2f} s per letter" if ok else ""
    click.echo(f"{ok} of {len(report.results)} letters written to {out_dir} in {elapsed:.1f} s"
               f"{per}; {len(report.failed)} row(s) failed.")
    if report.failed:
        click.echo("failed rows: " + ", ".join(str(r.row) for r in report.failed), err=True)
        sys.exit(1)


def data_folder() -> Path:
    """Return the data folder the environment names (``output/`` by default)."""
    return Path(os.environ.get(DATA_DIR_ENV) or "output")


def open_configured_database():
    """Open (creating and migrating if new) the database the environment names."""
    from .db import open_database

    return open_database(data_folder(), os.environ.get(DATABASE_URL_ENV) or None)


@cli.group()
def audit() -> None:
    """Check the audit record of a letter."""


@audit.command("verify")
@click.argument("letter_id", type=int)
def audit_verify(letter_id: int) -> None:
    """Recompute a letter's audit chain and name the first broken row (exit 1 if broken)."""
    from .audit import verify_chain

    database = open_configured_database()
    try:
        with database.transaction() as session:
            check = verify_chain(session, letter_id)
    except CounterpartError as exc:
        _fail(str(exc))
    finally:
        database.dispose()
    if check.ok:
        click.echo(f"letter {letter_id}: audit chain intact; {check.message}")
    else:
        click.echo(f"letter {letter_id}: audit chain BROKEN at event "
                   f"{check.first_broken_sequence}: {check.message}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Write a consistent copy of the database, its documents and the secrets to a new folder.

    Safe while the app runs.
    """
    from .backup import backup_database

    database = open_configured_database()
    try:
        backup_database(database, data_folder(), destination)
    except CounterpartError as exc:
        _fail(str(exc))
    finally:
        database.dispose()
    click.echo(f"backed up to {destination}")


@cli.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
def restore(source: Path) -> None:
    """Restore a backup into the data folder (stop the app first), then verify it."""
    from .backup import restore_backup, verify_store
    from .db import Database, database_url_for

    url = database_url_for(data_folder(), os.environ.get(DATABASE_URL_ENV) or None)
    try:
        restored = restore_backup(source, data_folder(), Database(url))
    except CounterpartError as exc:
        _fail(str(exc))
    database = Database(url)
    try:
        database.migrate()
        check = verify_store(database)
    finally:
        database.dispose()
    click.echo(f"restored {', '.join(restored)} from {source}")
    if not check.ok:
        for problem in check.problems:
            click.echo(f"problem: {problem}", err=True)
        sys.exit(1)
    click.echo(f"verified {check.documents} documents and the audit chains of "
               f"{check.letters} letters")


def main() -> None:
    """Run the command line."""
    cli(prog_name="counterpart")


if __name__ == "__main__":
    main()
