"""Write templates/separation_letter.docx from scratch.

The .docx is the source that lawyers edit; this script records how the first version was laid
out and can recreate it. Running it overwrites the template, so use it only to start over.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docx import Document
from docx.enum.section import WD_SECTION
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Inches, Pt

OUT = Path(__file__).resolve().parent.parent / "templates" / "separation_letter.docx"

GRANTS = "cancelled_option_grant_dates"

BODY = [
    "{{ company_name }} (the \u201cCompany\u201d) is in receipt of your resignation as "
    "{{ executive_positions }} of the Company effective as of {{ resignation_date|long_date }}. "
    "This letter sets forth certain agreements and understandings between you and the Company, "
    "all to be effective as of {{ effective_date|long_date }}.",

    "In consideration of your agreement to serve the Company in a consulting capacity for "
    "{{ consulting_months|period_adjective|with_article }} period after the effective date of "
    "your resignation (the \u201cConsulting Period\u201d), the terms of your outstanding stock "
    "options will be revised as stated below to allow you to exercise your stock options that "
    "were vested as of that date until {{ option_exercise_deadline|long_date }}. In exchange, "
    "you will agree to be available to the Company for consulting advice for up to "
    "{{ consulting_hours_per_month|count_of('hour') }} per month, not to use any of the "
    "Company\u2019s confidential or proprietary information during the term of this agreement, "
    "except on behalf of the Company, and thereafter, and not to interfere with certain "
    "relationships of the Company during the term of this agreement and thereafter, as set forth "
    "in more detail below. In the event that you are requested to provide greater than "
    "{{ consulting_hours_per_month|count_of('hour') }} per month of consulting advice, the "
    "Company shall compensate you at a rate of {{ hourly_rate|money }} per hour. You will be "
    "reimbursed for your reasonable expenses incurred in providing such consulting services to "
    "the Company. Such payments and reimbursements shall be made within "
    "{{ invoice_payment_days|count_of('day') }} of the Company\u2019s receipt of an invoice from "
    "you reflecting same, with supporting documentation regarding expenses attached. In "
    "addition, the Company will continue to provide medical benefits for you as currently "
    "provided for {{ medical_benefits_months|number_words|with_article }} month period following "
    "the effective date of your resignation.",

    "As an inducement to become the {{ inducement_title }} of the Company, you were awarded an "
    "option to acquire {{ option_shares|shares }} shares of the Company\u2019s common stock. Your "
    "right to exercise the option would expire "
    "{{ option_exercise_window_months|count_of('month') }} following the termination of your "
    "employment with the Company. The terms of the option permit you, however, to continue to "
    "exercise the vested portion if you are providing services to the Company as a consultant. "
    "You and the Company hereby revise the Stock Option Agreement, dated "
    "{{ option_agreement_date|long_date }} and the Restricted Stock Agreement, dated "
    "{{ restricted_stock_agreement_date|long_date }}, both between you and the Company as "
    "follows: (i) you will provide consulting services to {{ company_short_name }} as outlined "
    "in this letter, (ii) the option is vested as to {{ vested_option_shares|shares }} shares of "
    "common stock and the remaining portion of the option is cancelled and the right to "
    "exercise the vested option will expire on {{ option_exercise_deadline|long_date }} or, if "
    "sooner, {{ option_exercise_window_months|count_of('month') }} after the termination of "
    "your relationship as a consultant to the Company, "
    "{% if not " + GRANTS + " %}and {% endif %}"
    "(iii) you are vested as to {{ vested_restricted_shares|shares }} shares of restricted "
    "stock, and the right to accrue additional vesting of the restricted stock under the award "
    "granted to you on {{ restricted_stock_agreement_date|long_date }} is hereby cancelled"
    "{% if " + GRANTS + "|length == 1 %}, and (iv) the option granted to you on "
    "{{ " + GRANTS + "[0]|long_date }} is hereby cancelled"
    "{% elif " + GRANTS + " %}, and (iv) the options granted to you on "
    "{{ " + GRANTS + "|long_dates|join_and }} are hereby cancelled{% endif %}."
    "{% if repurchase_unvested_restricted %} The Company intends to exercise its repurchase "
    "option under the {{ restricted_stock_agreement_date|long_date }} Restricted Stock "
    "Agreement to acquire the unvested shares under the terms described in the Restricted Stock "
    "Agreement.{% endif %}",

    "By reason of your service as the {{ executive_positions }} of the Company, you have had "
    "access to and contact with the trade secrets and confidential and proprietary business "
    "information of the Company and its affiliates (the \u201cConfidential Information\u201d). You "
    "acknowledge that the Company conducts its business in an industry that is highly "
    "competitive, and that the Confidential Information constitutes a valuable, special and "
    "unique asset of the Company, and therefore you covenant and agree that, for a period of "
    "{{ confidentiality_years|count_of('year') }}:",
]

CONFIDENTIALITY = [
    "(a) You will at all times use your best efforts and exercise diligence to protect and "
    "safeguard the Confidential Information, including, without limitation, customer-related "
    "information, including names, addresses, specifications or requirements and the identity "
    "of customers and suppliers; arrangements with customers and suppliers; technical data, "
    "records, compilations of information, processes, intellectual property, patents, "
    "technology, computer software, and specifications relating to customers, suppliers, "
    "products and services; the manner of operation of the Company\u2019s, plans, policies, "
    "budgets, financial projections, business and/or marketing plans, concepts and/or "
    "projections; information about the finances and financial condition of the Company\u2019s "
    "business, costs, profits, profit margins, salaries and other financial information "
    "pertaining to the Company; and the trade secrets and other technical and non-technical "
    "information of the Company.",
    "(b) You will not at any time disclose any of such Confidential Information, except as may "
    "be required by law.",
    "(c) You will not at any time use, directly or indirectly, for your own benefit or for the "
    "benefit of another, any of such Confidential Information, except as is required in your "
    "capacity as consultant to the Company during the term of this agreement.",
    "(d) The confidentiality provisions set forth above shall not be applicable to any "
    "information which is in the public domain, other than as a result of action by you in "
    "violation of such confidentiality provisions, or which was obtained from sources other than "
    "the Company or its affiliates who are not under a duty of nondisclosure. All files, "
    "records, documents, drawings, specifications, computer software, memoranda, notes, or other "
    "documents relating to the business of the Company and its affiliates, whether prepared by "
    "you or that otherwise came into your possession, shall be the exclusive property of the "
    "Company and its affiliates and shall not be retained by you for any reason whatsoever.",
    "(e) You acknowledge that the confidentiality provisions set forth above are a reasonable "
    "and necessary protection of the legitimate business interests of the Company. In the event "
    "of any violation of the such confidentiality provisions, the Company shall be entitled to "
    "preliminary and permanent injunctive relief. Nothing herein contained shall be construed as "
    "prohibiting the Company from pursuing any other legal or equitable remedies available to "
    "the Company as a result of a violation of the confidentiality provisions set forth herein. "
    "The confidentiality provisions set forth above shall continue to be binding upon you for a "
    "period of {{ confidentiality_years|count_of('year') }} and supplement, but do not replace "
    "or modify, any and all other legal obligations you have with respect to maintaining the "
    "confidentiality of information related to the Company.",
    "(f) You will not assist any person or entity in any way to do, or attempt to do, anything "
    "prohibited by clauses (a) through (e) above.",
]

NON_SOLICIT_INTRO = (
    "By reason of your service as the {{ executive_positions }} of the Company, you have "
    "knowledge about, access to and/or contact with the Company\u2019s employees, dealers, "
    "distributors, customers, prospective customers, potential customers and other relationships "
    "that are or potentially are beneficial to the Company. You acknowledge that such "
    "relationships are a valuable, special and unique asset of the Company, and therefore you "
    "agree that, during the Consulting Period and for {{ non_solicit_years|count_of('year') }} "
    "thereafter:"
)

NON_SOLICIT = [
    "(w) You will not, nor will your affiliates, solicit any person or entity that is a "
    "dealer, distributor, customer, prospective customer or potential customer of the Company or "
    "its affiliates as of {{ resignation_date|long_date }} or during the Consulting Period to "
    "purchase any goods or services sold by, or competitive with a type sold by the Company or "
    "its affiliates from anyone other than Company or its affiliates.",
    "(x) You will not, nor will your affiliates, (i) solicit, recruit or hire any person "
    "employed by the Company or its affiliates on {{ resignation_date|long_date }} or during the "
    "Consulting Period and any person who has worked for Company or its affiliates on "
    "{{ resignation_date|long_date }} or during the Consulting Period unless such person\u2019s "
    "employment was involuntarily terminated by such employer, or (ii) solicit or encourage any "
    "person employed by the Company or its affiliates on {{ resignation_date|long_date }} or "
    "during the Consulting Period to leave the employment of the Company or its affiliates.",
    "(y) You acknowledge that the non-solicitation provisions set forth above are a reasonable "
    "and necessary protection of the legitimate business interests of the Company. In the event "
    "of any violation of the such non-solicitation provisions, the Company shall be entitled "
    "solely to preliminary and permanent injunctive relief.",
    "(z) You will not, nor will your affiliates, assist any person or entity in any way to do, "
    "or attempt to do, anything prohibited by clauses (w) through (y) above.",
]

CLOSING = (
    "On behalf of the Board of Directors and stockholders of the Company, I want to thank you "
    "for the valuable service you have provided to us during the past "
    "{{ service_years|count_of('year') }} and express our appreciation for your willingness to "
    "continue to assist the Company in this new role. If this letter correctly reflects the "
    "agreement of the parties with respect to the matters addressed herein, please execute "
    "{{ counterpart_copies|count_of('copy', 'copies') }} of this letter and return one fully "
    "executed copy of this letter to the undersigned. This letter may be executed in two or more "
    "counterparts, each of which shall be deemed to be an original document and all of which, "
    "taken together, shall be deemed to constitute a single original document."
)

def _page_field(paragraph) -> None:
    run = paragraph.add_run()
    for tag, text in (("begin", None), (None, "PAGE"), ("separate", None), (None, "2"),
                      ("end", None)):
        if tag:
            el = OxmlElement("w:fldChar")
            el.set(qn("w:fldCharType"), tag)
            run._r.append(el)
        elif text == "PAGE":
            instr = OxmlElement("w:instrText")
            instr.set(qn("xml:space"), "preserve")
            instr.text = " PAGE "
            run._r.append(instr)
        else:
            t = OxmlElement("w:t")
            t.text = text
            run._r.append(t)


def build(out: Path = OUT) -> None:
    doc = Document()
    normal = doc.styles["Normal"]
    normal.font.name = "Times New Roman"
    normal.font.size = Pt(12)
    rpr = normal.element.get_or_add_rPr()
    fonts = rpr.find(qn("w:rFonts"))
    for attr in ("w:ascii", "w:hAnsi", "w:cs", "w:eastAsia"):
        fonts.set(qn(attr), "Times New Roman")
    pf = normal.paragraph_format
    pf.space_before = Pt(0)
    pf.space_after = Pt(12)
    pf.line_spacing = Pt(13)
    pf.widow_control = True

    section = doc.sections[0]
    section.start_type = WD_SECTION.NEW_PAGE
    section.page_width, section.page_height = Inches(8.5), Inches(11)
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(section, side, Inches(1))
    section.different_first_page_header_footer = True
    footer_p = section.footer.paragraphs[0]
    footer_p.alignment = WD_ALIGN_PARAGRAPH.CENTER
    _page_field(footer_p)

    def para(text: str, *, indent: float = 0, first: float = 0, right: float = 0,
             align=WD_ALIGN_PARAGRAPH.JUSTIFY, after: float = 12, before: float = 0,
             keep: bool = False):
        p = doc.add_paragraph()
        p.alignment = align
        f = p.paragraph_format
        f.left_indent = Inches(indent)
        f.first_line_indent = Inches(first)
        f.right_indent = Inches(right)
        f.space_after = Pt(after)
        f.space_before = Pt(before)
        f.keep_with_next = keep
        if text:
            p.add_run(text)
        return p

    para("{{ letter_date|long_date }}", align=WD_ALIGN_PARAGRAPH.CENTER, after=24)
    para("Dear {{ executive_first_name }},", align=WD_ALIGN_PARAGRAPH.LEFT)
    for text in BODY:
        para(text, first=0.5)
    for text in CONFIDENTIALITY:
        para(text, indent=0.5, after=12 if text is CONFIDENTIALITY[-1] else 6)
    para(NON_SOLICIT_INTRO, first=0.5)
    for text in NON_SOLICIT:
        para(text, indent=0.5, after=12 if text is NON_SOLICIT[-1] else 6)
    para(CLOSING, first=0.5, after=12, keep=True)

    block = 3.25
    left = WD_ALIGN_PARAGRAPH.LEFT
    para("Sincerely,", indent=block, align=left, keep=True)
    para("{{ company_name|upper }}", indent=block, align=left, after=24, keep=True)
    # The signing fields: each prints the signature line and marks, exactly, where its party
    # signs (see workflow/render.py). The name under the line is the template's own text.
    para("{{ sign_here('company') }}", indent=block, align=left, after=0, keep=True)
    para("{{ chair_name }}", indent=block, align=left, after=0, keep=True)
    para("{{ chair_title }}", indent=block, align=left, after=24, keep=True)
    para("Acknowledged and agreed to", align=left, after=0, keep=True)
    # Unsigned: "this ___ day of July, 2006" (the letter date's month), for a pen. Rendered
    # again once the executive signs online: the true date, "this 3rd day of March, 2027".
    para("this {{ date_signed('executive', letter_date) }}", align=left, after=24, keep=True)
    para("{{ sign_here('executive') }}", align=left, after=0, keep=True)
    para("{{ executive_full_name }}", align=left, after=0)

    doc.core_properties.title = "Separation and consulting letter agreement"
    doc.core_properties.author = "Counterpart"
    doc.core_properties.comments = ""
    out.parent.mkdir(parents=True, exist_ok=True)
    doc.save(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
