"""The command line renders letters, reports bad terms per field, and runs batches."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pypdf
import pytest
from support import docx_text, letter_words

COUNTERPART = [sys.executable, "-m", "workflow.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COUNTERPART, *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=180, env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.fixture()
def terms_file(tmp_path, reference_terms) -> Path:
    path = tmp_path / "terms.json"
    path.write_text(json.dumps(reference_terms))
    return path


def test_render_docx_and_pdf(tmp_path, terms_file, reference_words):
    result = run("render", "separation_letter", "--terms", str(terms_file),
                 "--docx", str(tmp_path / "l.docx"), "--pdf", str(tmp_path / "l.pdf"))
    assert result.returncode == 0, result.stderr
    assert letter_words(docx_text((tmp_path / "l.docx").read_bytes())) == reference_words
    reader = pypdf.PdfReader(tmp_path / "l.pdf")
    assert len(reader.pages) == 3
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_render_reads_standard_input(tmp_path, reference_terms):
    result = run("render", "separation_letter", "--terms", "-", "--docx",
                 str(tmp_path / "l.docx"), stdin=json.dumps(reference_terms))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "l.docx").stat().st_size > 10_000


def test_invalid_terms_exit_2_with_a_line_per_field_and_no_file(tmp_path, reference_terms):
    bad = {**reference_terms, "vested_option_shares": 2_500_000, "hourly_rate": "1.234",
           "letter_date": "yesterday"}
    result = run("render", "separation_letter", "--terms", "-", "--docx",
                 str(tmp_path / "l.docx"), "--pdf", str(tmp_path / "l.pdf"),
                 stdin=json.dumps(bad))
    assert result.returncode == 2
    lines = sorted(result.stderr.strip().splitlines())
    assert lines == [
        "hourly_rate: may have at most 2 decimals",
        "letter_date: must be a date written YYYY-MM-DD",
        "vested_option_shares: cannot exceed the 2,000,000 option shares granted",
    ]
    assert list(tmp_path.iterdir()) == []


def test_unreadable_terms_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run("render", "separation_letter", "--terms", str(broken), "--docx",
                 str(tmp_path / "l.docx"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{broken}: not valid JSON")
    result = run("render", "separation_letter", "--terms", str(tmp_path / "missing.json"),
                 "--docx", str(tmp_path / "l.docx"))
    assert result.returncode == 2 and "missing.json: cannot be read" in result.stderr
    assert not (tmp_path / "l.docx").exists()


def test_unknown_template(tmp_path, terms_file):
    result = run("render", "no_such_letter", "--terms", str(terms_file), "--docx",
                 str(tmp_path / "l.docx"))
    assert result.returncode == 2
    assert "no template named 'no_such_letter'" in result.stderr
    assert "separation_letter" in result.stderr


def test_schema_and_sample_terms(reference_terms):
    schema = json.loads(run("schema", "separation_letter").stdout)
    assert schema["properties"]["hourly_rate"]["title"] == "Hourly rate (USD)"
    assert json.loads(run("sample-terms", "separation_letter").stdout) == reference_terms


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_batch_renders_good_rows_and_reports_bad_ones(tmp_path, reference_terms):
    base = {**reference_terms,
            "cancelled_option_grant_dates": ";".join(reference_terms[
                "cancelled_option_grant_dates"]),
            "repurchase_unvested_restricted": "true"}
    rows = [dict(base), {**base, "executive_full_name": "Ana Ortiz",
                         "cancelled_option_grant_dates": ""},
            {**base, "vested_option_shares": "9000000", "letter_date": "2006-13-01"},
            {**base, "option_exercise_deadline": "", "consulting_months": "6"}]
    _write_csv(tmp_path / "letters.csv", rows)
    result = run("batch", "separation_letter", "--csv", str(tmp_path / "letters.csv"),
                 "--out-dir", str(tmp_path / "out"), "--processes", "2")
    assert result.returncode == 1
    assert "row 4: vested_option_shares: cannot exceed the 2,000,000" in result.stderr
    assert "row 4: letter_date: '2006-13-01' is not a real calendar date" in result.stderr
    assert "3 of 4 letters written" in result.stdout
    assert "1 row(s) failed" in result.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    stems = ["row0002-john-r-tucker", "row0003-ana-ortiz", "row0005-john-r-tucker"]
    assert written == [f"{stem}-separation-letter.{ext}" for stem in stems
                       for ext in ("docx", "pdf")]
    out = tmp_path / "out"
    no_grants = docx_text((out / "row0003-ana-ortiz-separation-letter.docx").read_bytes())
    assert "(iv)" not in no_grants
    six_months = " ".join(docx_text((out / "row0005-john-r-tucker-separation-letter.docx")
                                    .read_bytes()).split())
    assert "a six-month period" in six_months and "until January 31, 2007" in six_months


def test_batch_refuses_unknown_columns(tmp_path, reference_terms):
    _write_csv(tmp_path / "letters.csv", [{**reference_terms, "salary": "1"}])
    result = run("batch", "separation_letter", "--csv", str(tmp_path / "letters.csv"),
                 "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "'salary' are not terms of the separation_letter template" in result.stderr
