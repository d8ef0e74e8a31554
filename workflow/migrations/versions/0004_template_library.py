"""Template library: templates and their versions in the database; letters named by their
template (title, file-name stem, listed terms) instead of an executive and a company

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 01:30:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("docx_sha256", sa.String(length=64), nullable=False),
        sa.Column("schema_toml", sa.Text(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_by_id", sa.Integer(), nullable=True),
        sa.Column("test_pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("test_rendered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"]),
        sa.ForeignKeyConstraint(["docx_sha256"], ["blobs.sha256"]),
        sa.ForeignKeyConstraint(["test_pdf_sha256"], ["blobs.sha256"]),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["published_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("template_id", "number"),
    )
    with op.batch_alter_table("template_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_template_versions_template_id"), ["template_id"],
                              unique=False)
    # Plain ALTER TABLE statements: SQLite's batch mode would copy these tables, which others
    # refer to, and dropping a table that rows refer to fails while foreign keys are on.
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("letter_versions")}
    if "template_version_id" in existing:  # left by a downgrade on SQLite (see below)
        pass
    elif op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE letter_versions ADD COLUMN template_version_id INTEGER "
                   "CONSTRAINT fk_letter_versions_template_version_id "
                   "REFERENCES template_versions (id)")
    else:
        op.add_column("letter_versions",
                      sa.Column("template_version_id", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_letter_versions_template_version_id", "letter_versions",
                              "template_versions", ["template_version_id"], ["id"])
    op.add_column("letters", sa.Column("title", sa.String(length=300), nullable=False,
                                       server_default=""))
    op.add_column("letters", sa.Column("file_stem", sa.String(length=80), nullable=False,
                                       server_default="letter"))
    op.add_column("letters", sa.Column("list_values", sa.JSON(), nullable=True))
    _name_existing_letters()
    _drop_columns("letters", "executive_name", "company_name")


def _drop_columns(table: str, *columns: str) -> None:
    if op.get_bind().dialect.name == "sqlite":  # SQLite 3.35 and later drop a column in place
        for column in columns:
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    for column in columns:
        op.drop_column(table, column)


def _names_from_template(template: str, terms: dict[str, Any]) -> tuple[str, str, list] | None:
    """Name a letter from its template's schema in the shipped template folder, if it is
    there and the terms still validate."""
    from workflow.errors import CounterpartError
    from workflow.schema import document_names, load_template, validate_terms

    try:
        spec = load_template(template)
        names = document_names(spec, validate_terms(spec, terms))
    except CounterpartError:
        return None
    return names.title, names.file_stem, [
        {"term": term, "label": label, "value": value} for term, label, value in names.columns]


def _name_existing_letters() -> None:
    """Give existing letters their title, file stem and listed terms from their newest
    version's terms, and their search text from those and their signers."""
    from workflow.text import file_slug, search_text

    bind = op.get_bind()
    letters = sa.table("letters", sa.column("id", sa.Integer), sa.column("template", sa.String),
                       sa.column("current_version", sa.Integer),
                       sa.column("executive_name", sa.String),
                       sa.column("company_name", sa.String), sa.column("title", sa.String),
                       sa.column("file_stem", sa.String), sa.column("list_values", sa.JSON),
                       sa.column("search_text", sa.Text))
    versions = sa.table("letter_versions", sa.column("letter_id", sa.Integer),
                        sa.column("number", sa.Integer), sa.column("terms", sa.JSON),
                        sa.column("template_name", sa.String))
    envelopes = sa.table("envelopes", sa.column("id", sa.String),
                         sa.column("letter_id", sa.Integer))
    counterparts = sa.table("counterparts", sa.column("envelope_id", sa.String),
                            sa.column("name", sa.String))
    signers: dict[int, list[str]] = {}
    for letter_id, name in bind.execute(
            sa.select(envelopes.c.letter_id, counterparts.c.name)
            .join(counterparts, counterparts.c.envelope_id == envelopes.c.id)):
        signers.setdefault(letter_id, []).append(name)
    rows = bind.execute(
        sa.select(letters.c.id, letters.c.executive_name, letters.c.company_name,
                  versions.c.template_name, versions.c.terms)
        .join(versions, (versions.c.letter_id == letters.c.id)
              & (versions.c.number == letters.c.current_version))).all()
    for letter_id, executive, company, template, terms in rows:
        named = _names_from_template(template, dict(terms or {}))
        if named is None:  # a template no longer shipped: keep the names the row had
            title = ", ".join(n for n in (executive, company) if n) or template
            named = (title, file_slug(executive or template), [])
        title, stem, columns = named
        text = search_text([title, *(c["value"] for c in columns), executive, company,
                            *signers.get(letter_id, [])])
        bind.execute(letters.update().where(letters.c.id == letter_id).values(
            title=title, file_stem=stem, list_values=columns, search_text=text))


def downgrade() -> None:
    op.add_column("letters", sa.Column("executive_name", sa.String(length=200), nullable=False,
                                       server_default=""))
    op.add_column("letters", sa.Column("company_name", sa.String(length=200), nullable=False,
                                       server_default=""))
    bind = op.get_bind()
    letters = sa.table("letters", sa.column("id", sa.Integer),
                       sa.column("executive_name", sa.String),
                       sa.column("company_name", sa.String), sa.column("title", sa.String),
                       sa.column("list_values", sa.JSON))
    for letter_id, title, columns in bind.execute(
            sa.select(letters.c.id, letters.c.title, letters.c.list_values)).all():
        values = [str(c.get("value", "")) for c in columns or []] + [title or "", ""]
        bind.execute(letters.update().where(letters.c.id == letter_id).values(
            executive_name=values[0][:200], company_name=values[1][:200]))
    _drop_columns("letters", "list_values", "file_stem", "title")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a column with a foreign key in place, nor copy a table that
        # others refer to inside a transaction: the column stays, empty, unknown to 0003.
        op.execute("UPDATE letter_versions SET template_version_id = NULL")
    else:
        op.drop_constraint("fk_letter_versions_template_version_id", "letter_versions",
                           type_="foreignkey")
        op.drop_column("letter_versions", "template_version_id")
    with op.batch_alter_table("template_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_template_versions_template_id"))
    op.drop_table("template_versions")
    op.drop_table("templates")
