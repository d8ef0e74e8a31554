"""Write templates/consulting_agreement.docx from scratch.

The .docx is the source that lawyers edit; this script records how the first version was laid
out and can recreate it. Running it overwrites the template, so use it only to start over.
Three parties sign it, each at their own ``{{ sign_here('ROLE') }}`` field, and each dates it
with ``{{ date_signed('ROLE') }}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Inches, Pt

OUT = Path(__file__).resolve().parent.parent / "templates" / "consulting_agreement.docx"

OPENING = (
    "This Consulting Agreement (the \u201cAgreement\u201d) is made on "
    "{{ agreement_date|long_date }} between {{ company_name }}, a {{ company_state }} "
    "corporation (the \u201cCompany\u201d), {{ consultant_name }} (the \u201cConsultant\u201d) "
    "and {{ guarantor_name }} (the \u201cGuarantor\u201d)."
)

CLAUSES = [
    "1. Services. Beginning on {{ start_date|long_date }} and for a term of "
    "{{ term_months|count_of('month') }}, the Consultant will provide the Company with "
    "{{ services }} (the \u201cServices\u201d), for up to "
    "{{ hours_per_month|count_of('hour') }} in each month, as the Company reasonably requests.",

    "2. Fees. The Company will pay the Consultant a fee of {{ monthly_fee|money }} for each "
    "month of the term, within {{ payment_days|count_of('day') }} of receiving the "
    "Consultant\u2019s invoice for that month, and will reimburse the Consultant\u2019s "
    "reasonable expenses approved in advance by the Company.",

    "3. Independent contractor. The Consultant is an independent contractor and not an "
    "employee of the Company. The Consultant is responsible for all taxes on the fees and is "
    "not entitled to any benefit the Company provides to its employees.",

    "4. Confidentiality. During the term and for {{ confidentiality_years|count_of('year') }} "
    "after it ends, the Consultant will keep confidential all information of the Company that "
    "is not public and will use it only to provide the Services. All work product made in "
    "providing the Services belongs to the Company.",

    "5. Termination. Either the Company or the Consultant may end this Agreement by giving the "
    "other {{ notice_days|count_of('day') }}\u2019 written notice. The Company will pay the "
    "fees earned up to the date the Agreement ends.",

    "6. Guarantee. The Guarantor guarantees to the Company that the Consultant will perform "
    "every obligation of the Consultant under this Agreement, and agrees that the Company may "
    "enforce this guarantee without first acting against the Consultant.",

    "7. General. This Agreement is governed by the laws of the State of "
    "{{ governing_state }}. It is the entire agreement of the parties about the Services and "
    "may be changed only in a writing signed by all of them. It may be executed in "
    "counterparts, each of which is an original and all of which together are one agreement.",

    "8. Notices. Notices under this Agreement are given by email: to the Company at "
    "{{ company_signatory_email }}, and to the Consultant, who also receives them for the "
    "Guarantor, at {{ consultant_email }}.",
]

CLOSING = "The parties have signed this Agreement on the dates written below."

# Each block: the heading above the line, the signing field, and the lines printed under it.
SIGNATURE_BLOCKS = [
    ("{{ company_name|upper }}", "company",
     ["By: {{ company_signatory_name }}", "Title: {{ company_signatory_title }}"]),
    ("CONSULTANT", "consultant", ["{{ consultant_name }}"]),
    ("GUARANTOR", "guarantor", ["{{ guarantor_name }}"]),
]


def build(out: Path = OUT) -> None:
    doc = Document()
    normal = doc.styles["Normal"]
    normal.font.name = "Times New Roman"
    normal.font.size = Pt(12)
    fonts = normal.element.get_or_add_rPr().find(qn("w:rFonts"))
    for attr in ("w:ascii", "w:hAnsi", "w:cs", "w:eastAsia"):
        fonts.set(qn(attr), "Times New Roman")
    normal.paragraph_format.space_before = Pt(0)
    normal.paragraph_format.space_after = Pt(10)
    normal.paragraph_format.line_spacing = Pt(14)

    section = doc.sections[0]
    section.page_width, section.page_height = Inches(8.5), Inches(11)
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(section, side, Inches(1))

    def para(text: str, *, align=WD_ALIGN_PARAGRAPH.JUSTIFY, after: float = 10,
             keep: bool = False, bold: bool = False):
        p = doc.add_paragraph()
        p.alignment = align
        p.paragraph_format.space_after = Pt(after)
        p.paragraph_format.keep_with_next = keep
        run = p.add_run(text)
        run.bold = bold
        return p

    para("CONSULTING AGREEMENT", align=WD_ALIGN_PARAGRAPH.CENTER, after=18, bold=True)
    para(OPENING)
    for clause in CLAUSES:
        para(clause)
    para(CLOSING, after=18, keep=True)

    left = WD_ALIGN_PARAGRAPH.LEFT
    for heading, role, under in SIGNATURE_BLOCKS:
        para(heading, align=left, after=24, keep=True)
        # The signing field prints the signature line and marks where this party signs; the
        # name under it is the template's own text.
        para(f"{{{{ sign_here('{role}') }}}}", align=left, after=0, keep=True)
        for line in under:
            para(line, align=left, after=0, keep=True)
        para(f"Date: {{{{ date_signed('{role}') }}}}", align=left, after=20,
             keep=role != SIGNATURE_BLOCKS[-1][1])

    doc.core_properties.title = "Consulting agreement"
    doc.core_properties.author = "Counterpart"
    doc.core_properties.comments = ""
    out.parent.mkdir(parents=True, exist_ok=True)
    doc.save(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
