"""A hostile template is refused before it is parsed or rendered, and nothing in it executes."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from workflow.errors import TemplateError
from workflow.render import render_docx, template_variables
from workflow.schema import DEFAULT_TEMPLATE_DIR, load_template


def copy_template(tmp_path: Path, name: str = "hostile") -> Path:
    shutil.copy(DEFAULT_TEMPLATE_DIR / "separation_letter.toml", tmp_path / f"{name}.toml")
    return tmp_path / f"{name}.docx"


def rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w",
                                                         zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, replace.get(item.filename, src.read(item.filename)))
        for name in set(replace) - set(src.namelist()):
            dst.writestr(name, replace[name])


def document_xml() -> bytes:
    with zipfile.ZipFile(DEFAULT_TEMPLATE_DIR / "separation_letter.docx") as archive:
        return archive.read("word/document.xml")


@pytest.mark.parametrize("payload", [
    "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ letter_date.__class__.__init__ }}",
])
def test_sandbox_escapes_are_refused(tmp_path, valid_terms, payload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = copy_template(tmp_path)
    xml = document_xml().replace(b"Dear {{ executive_first_name }},",
                                 f"Dear {payload},".encode())
    rewrite(DEFAULT_TEMPLATE_DIR / "separation_letter.docx", target, {"word/document.xml": xml})
    spec = load_template("hostile", tmp_path)
    with pytest.raises(TemplateError, match="hostile.docx"):
        render_docx(spec, valid_terms)
    assert not (tmp_path / "PWNED").exists()


def test_external_entity_is_refused_before_parsing(tmp_path, valid_terms):
    target = copy_template(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    xml = document_xml()
    head, _, body = xml.partition(b"?>")
    evil = (head + b"?>" + f'<!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'.encode()
            + body.replace(b"Dear {{ executive_first_name }},", b"Dear &x;,"))
    rewrite(DEFAULT_TEMPLATE_DIR / "separation_letter.docx", target, {"word/document.xml": evil})
    spec = load_template("hostile", tmp_path)
    with pytest.raises(TemplateError, match="declares a DTD or entities"):
        render_docx(spec, valid_terms)
    with pytest.raises(TemplateError, match="hostile.docx"):
        template_variables(spec)


def test_entity_expansion_bomb_is_refused(tmp_path, valid_terms):
    target = copy_template(tmp_path)
    lol = b'<!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)) + b"]>"
    xml = document_xml()
    head, _, body = xml.partition(b"?>")
    rewrite(DEFAULT_TEMPLATE_DIR / "separation_letter.docx", target,
            {"word/document.xml": head + b"?>" + lol + body})
    with pytest.raises(TemplateError, match="DTD or entities"):
        render_docx(load_template("hostile", tmp_path), valid_terms)


def test_zip_bomb_is_refused(tmp_path, valid_terms):
    target = copy_template(tmp_path)
    rewrite(DEFAULT_TEMPLATE_DIR / "separation_letter.docx", target,
            {"word/padding.xml": b"<a>" + b" " * (60 * 1024 * 1024) + b"</a>"})
    assert target.stat().st_size < 1024 * 1024  # small on disk, 60 MB inside
    with pytest.raises(TemplateError, match="zip bomb"):
        render_docx(load_template("hostile", tmp_path), valid_terms)


def test_not_a_docx(tmp_path, valid_terms):
    target = copy_template(tmp_path)
    target.write_bytes(b"just text")
    with pytest.raises(TemplateError, match="hostile.docx: not a .docx file"):
        render_docx(load_template("hostile", tmp_path), valid_terms)
