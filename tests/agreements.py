"""Word templates built for the template library's tests, with python-docx: a purchase
agreement whose variables sit in the body, a header, a footer, a footnote and the document's
properties, with a loop over a list and a condition used alone."""

from __future__ import annotations

import io
import re
import zipfile

import docx

FOOTNOTES_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"
FOOTNOTES_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/footnotes"
CUSTOM_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
CUSTOM_REL = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
              "custom-properties")
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"

# Every variable of the purchase agreement, the part it is in, and the type it is read as.
PURCHASE_VARIABLES = {
    "closing_date": ("the body", "date"),
    "purchase_price": ("the body", "decimal"),
    "number_of_units": ("the body", "integer"),
    "warranty_months": ("the body", "integer"),
    "include_warranty": ("the body", "boolean"),
    "goods": ("the body", "text_list"),
    "delivery_dates": ("the body", "date_list"),
    "buyer_name": ("the body", "text"),
    "seller_name": ("the body", "text"),
    "matter_reference": ("header 1", "text"),
    "footer_note": ("footer 1", "text"),
    "governing_law": ("the footnotes", "text"),
    "deal_code": ("the document properties", "text"),
}


def _footnotes(text: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f'<w:footnotes xmlns:w="{W}">'
            '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p>'
            '</w:footnote>'
            '<w:footnote w:type="continuationSeparator" w:id="0"><w:p><w:r>'
            '<w:continuationSeparator/></w:r></w:p></w:footnote>'
            f'<w:footnote w:id="1"><w:p><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'
            '</w:footnote></w:footnotes>').encode()


def _custom_properties(name: str, value: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
            'custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/'
            '2006/docPropsVTypes"><property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" '
            f'pid="2" name="{name}"><vt:lpwstr>{value}</vt:lpwstr></property></Properties>'
            ).encode()


def add_parts(data: bytes, *, footnote: str | None = None,
              custom: tuple[str, str] | None = None) -> bytes:
    """Add a footnote (referenced from the first paragraph that says "Governing law") and a
    custom document property to a .docx that python-docx made."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "[Content_Types].xml":
                text = content.decode("utf-8")
                if footnote is not None:
                    text = text.replace("</Types>", '<Override PartName="/word/footnotes.xml" '
                                        f'ContentType="{FOOTNOTES_TYPE}"/></Types>')
                if custom is not None:
                    text = text.replace("</Types>", '<Override PartName="/docProps/custom.xml" '
                                        f'ContentType="{CUSTOM_TYPE}"/></Types>')
                content = text.encode("utf-8")
            elif item.filename == "word/_rels/document.xml.rels" and footnote is not None:
                content = content.decode("utf-8").replace(
                    "</Relationships>", f'<Relationship Id="rIdNotes" Type="{FOOTNOTES_REL}" '
                    'Target="footnotes.xml"/></Relationships>').encode("utf-8")
            elif item.filename == "_rels/.rels" and custom is not None:
                content = content.decode("utf-8").replace(
                    "</Relationships>", f'<Relationship Id="rIdCustom" Type="{CUSTOM_REL}" '
                    'Target="docProps/custom.xml"/></Relationships>').encode("utf-8")
            elif item.filename == "word/document.xml" and footnote is not None:
                content = re.sub(
                    rb"(Governing law\.</w:t></w:r>)",
                    rb'\1<w:r><w:rPr><w:vertAlign w:val="superscript"/></w:rPr>'
                    rb'<w:footnoteReference w:id="1"/></w:r>', content, count=1)
            target.writestr(item, content)
        if footnote is not None:
            target.writestr("word/footnotes.xml", _footnotes(footnote))
        if custom is not None:
            target.writestr("docProps/custom.xml", _custom_properties(*custom))
    return out.getvalue()


def purchase_agreement(*, extra_body: list[str] = (), custom: tuple[str, str] | None = None,
                       parties: tuple[str, ...] = ("buyer", "seller")) -> bytes:
    """A purchase agreement between a buyer and a seller (see PURCHASE_VARIABLES)."""
    document = docx.Document()
    document.core_properties.subject = "{{ deal_code }}"
    document.core_properties.title = "Purchase agreement"
    section = document.sections[0]
    section.header.paragraphs[0].text = "Matter {{ matter_reference }}"
    section.footer.paragraphs[0].text = "{{ footer_note }}"
    document.add_paragraph("Purchase agreement")
    document.add_paragraph("Closing on {{ closing_date|long_date }}, for "
                           "{{ purchase_price|money }} in all.")
    document.add_paragraph("The seller delivers {{ number_of_units|shares }} units of: "
                           "{% for item in goods %}{{ item }}{% if not loop.last %}, "
                           "{% endif %}{% endfor %}.")
    document.add_paragraph("Deliveries on {% for day in delivery_dates %}{{ day|long_date }}"
                           "{% if not loop.last %} and {% endif %}{% endfor %}.")
    document.add_paragraph("{% if include_warranty %}The seller warrants the goods for "
                           "{{ warranty_months|count_of('month') }}.{% endif %}")
    document.add_paragraph("Governing law.")
    for line in extra_body:
        document.add_paragraph(line)
    for role in parties:
        document.add_paragraph(f"{{{{ sign_here('{role}') }}}}")
        document.add_paragraph(f"{{{{ {role}_name }}}}")
    buffer = io.BytesIO()
    document.save(buffer)
    return add_parts(buffer.getvalue(), footnote="Governed by the law of {{ governing_law }}.",
                     custom=custom)
