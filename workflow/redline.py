"""Redlines: what changed between two versions of a letter, as Word tracked changes.

Two versions of a letter are rendered from the same template, so their paragraphs correspond
almost one to one. :func:`redline_docx` aligns the paragraphs of each story of the two .docx
files (the body, every header and footer, the footnotes and endnotes; tables row by row and
cell by cell), then compares each pair of paragraphs word by word, and writes the later
document with the words that differ as tracked changes: ``w:del`` runs holding the earlier
words, ``w:ins`` runs holding the later ones, each keeping its run's formatting (``w:rPr``).
A paragraph found in one version only is a whole deleted or inserted paragraph (its runs and
its paragraph mark). Word and LibreOffice show the result as changes to accept or reject:
accepting them all gives the later version's text, rejecting them all the earlier one's.

:func:`letter_redline` does this for two stored versions of a letter; :func:`changed_terms`
lists the terms that differ between them, and :func:`changed_sentences` cuts a changed
paragraph into the sentences a reader needs to see.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import DocumentError, NotFoundError, StateError
from .models import Document, Letter, LetterVersion

__all__ = [
    "AUTHOR", "Segment", "ChangedParagraph", "Redline", "LetterRedline", "redline_docx",
    "changed_sentences", "changed_terms", "letter_redline", "version_docx", "revision_date",
]

AUTHOR = "Counterpart"
"""The author every tracked change of a redline is signed with."""

SegmentKind = Literal["equal", "insert", "delete"]

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_STORY_TYPES = {
    f"{base}/{kind}": kind
    for base in ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
                 "http://purl.oclc.org/ooxml/officeDocument/relationships")
    for kind in ("header", "footer", "footnotes", "endnotes")
}
_OFFICE_DOCUMENT = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
                    "officeDocument", "http://purl.oclc.org/ooxml/officeDocument/relationships/"
                    "officeDocument")


def _w(tag: str) -> str:
    return f"{{{_W}}}{tag}"


_P, _R_RUN, _T, _PPR, _RPR, _TBL, _TR, _TC, _SDT = (
    _w("p"), _w("r"), _w("t"), _w("pPr"), _w("rPr"), _w("tbl"), _w("tr"), _w("tc"), _w("sdt"))
_INS, _DEL, _DEL_TEXT = _w("ins"), _w("del"), _w("delText")
_BLOCKS = {_P, _TBL, _SDT}
# Zero-width marks between runs: kept where the later version has them, never compared.
_MARKERS = {_w(t) for t in (
    "bookmarkStart", "bookmarkEnd", "proofErr", "commentRangeStart", "commentRangeEnd",
    "permStart", "permEnd", "moveFromRangeStart", "moveFromRangeEnd", "moveToRangeStart",
    "moveToRangeEnd", "customXmlInsRangeStart", "customXmlInsRangeEnd",
    "customXmlDelRangeStart", "customXmlDelRangeEnd")}
# What a copied deleted paragraph must not bring along: its bookmarks would clash with the
# later version's (the signing fields are bookmarks), and a section break would add a section.
_DROPPED_FROM_COPIES = {_w(t) for t in (
    "bookmarkStart", "bookmarkEnd", "commentRangeStart", "commentRangeEnd", "commentReference",
    "permStart", "permEnd", "sectPr")}
_RENDER_CACHES = {_w("lastRenderedPageBreak")}
# Properties that come before a container's content (a cell's tcPr, a row's trPr...).
_PROPERTY_SUFFIX = "Pr"
_SIMILAR = 0.5

# A word: letters, digits and the signs that belong to amounts ($500, 2,000,000, 1250.50, 5%),
# joined by inner punctuation ("one-year", "Company’s"); then runs of spaces; then any other
# single character (punctuation stands alone, so "2006," differs from "2006" by its comma).
_TOKEN = re.compile(r"[\w$€£¥%]+(?:[.,'’/\-–][\w$€£¥%]+)*|\s+|.", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])[”\"’)]*\s+(?=[\"“(‘A-Z0-9])")


@dataclass(frozen=True)
class Segment:
    """A piece of a changed paragraph: words both versions share, or inserted, or deleted."""

    kind: SegmentKind
    text: str


@dataclass(frozen=True)
class ChangedParagraph:
    """A paragraph that differs between two versions, as segments in reading order.

    ``story`` says where it is: ``body``, ``header``, ``footer``, ``footnotes`` or
    ``endnotes``.
    """

    story: str
    segments: tuple[Segment, ...]

    @property
    def before(self) -> str:
        """The paragraph's text in the earlier version."""
        return "".join(s.text for s in self.segments if s.kind != "insert")

    @property
    def after(self) -> str:
        """The paragraph's text in the later version."""
        return "".join(s.text for s in self.segments if s.kind != "delete")


@dataclass(frozen=True)
class Redline:
    """A tracked-changes .docx and the paragraphs it marks."""

    docx: bytes
    changes: tuple[ChangedParagraph, ...]


# --- reading paragraphs as words -------------------------------------------------------------

def _canonical(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return etree.tostring(element, method="c14n").decode("utf-8")


@dataclass
class _Atom:
    """One comparable piece of a paragraph: a word, a space, a tab, a field character..."""

    key: str
    rpr: etree._Element | None
    rpr_key: str = ""  # the run formatting, written out, to compare
    text: str | None = None  # a piece of text; otherwise ``element`` is copied
    element: etree._Element | None = None
    whole: bool = False  # an inline container (a hyperlink...) compared as one piece

    @property
    def visible(self) -> str:
        if self.text is not None:
            return self.text
        if self.element is None:
            return ""
        tag = self.element.tag
        if tag == _w("tab"):
            return "\t"
        if tag in (_w("br"), _w("cr")):
            return "\n"
        return "".join(t.text or "" for t in self.element.iter(_T, _w("tab")))


@dataclass
class _Paragraph:
    atoms: list[_Atom] = field(default_factory=list)
    markers: dict[int, list[etree._Element]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return "".join(a.key for a in self.atoms)

    @property
    def words(self) -> list[str]:
        return [a.key for a in self.atoms if a.key.strip()]

    @property
    def text(self) -> str:
        return "".join(a.visible for a in self.atoms)


def _run_atoms(run: etree._Element) -> Iterable[_Atom]:
    rpr = run.find(_RPR)
    style = _canonical(rpr)
    for child in run:
        if child.tag == _RPR or child.tag in _RENDER_CACHES:
            continue
        if child.tag == _T:
            for token in _TOKEN.findall(child.text or ""):
                yield _Atom(token, rpr, style, text=token)
        elif child.tag == _w("tab"):
            yield _Atom("\t", rpr, style, element=child)
        elif child.tag in (_w("br"), _w("cr")):
            yield _Atom("\n" + (child.get(_w("type")) or ""), rpr, style, element=child)
        else:
            yield _Atom("\x00" + _canonical(child), rpr, style, element=child)


def _read_paragraph(paragraph: etree._Element) -> _Paragraph:
    read = _Paragraph()
    for child in paragraph:
        if child.tag == _PPR or not isinstance(child.tag, str):
            continue
        if child.tag == _R_RUN:
            read.atoms.extend(_run_atoms(child))
        elif child.tag in _MARKERS or not any(True for _ in child.iter(_T, _R_RUN)):
            read.markers.setdefault(len(read.atoms), []).append(child)
        else:
            text = "".join(t.text or "" for t in child.iter(_T))
            read.atoms.append(_Atom(f"\x01{etree.QName(child).localname}:{text}", None,
                                    element=child, whole=True))
    return read


def _block_text(block: etree._Element) -> str:
    """The text of a block as blocks are aligned by: its words, tabs and breaks, and what
    else its runs hold written out (a field, a picture), paragraph by paragraph."""
    paragraphs = []
    for paragraph in ([block] if block.tag == _P else block.iter(_P)):
        pieces = []
        for run in paragraph.iter(_R_RUN):
            for child in run:
                tag = child.tag
                if tag == _T:
                    pieces.append(child.text or "")
                elif tag == _w("tab"):
                    pieces.append("\t")
                elif tag in (_w("br"), _w("cr")):
                    pieces.append("\n")
                elif tag != _RPR and tag not in _RENDER_CACHES and isinstance(tag, str):
                    pieces.append("\x00" + etree.tostring(child).decode("utf-8"))
        paragraphs.append("".join(pieces))
    return "\x02".join(paragraphs)


def _block_key(block: etree._Element) -> str:
    return f"{etree.QName(block).localname}:{_block_text(block)}"


def _similarity(old: etree._Element, new: etree._Element) -> float:
    if old.tag != new.tag:
        return 0.0
    a = _TOKEN.findall(_block_text(old))
    b = _TOKEN.findall(_block_text(new))
    a, b = [t for t in a if t.strip()], [t for t in b if t.strip()]
    if not a and not b:
        return 1.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


# --- writing tracked changes -----------------------------------------------------------------

class _Marks:
    """Makes the ``w:ins``/``w:del`` elements of one redline: unique ids, author and date."""

    def __init__(self, author: str, date: str, first_id: int) -> None:
        self.author = author
        self.date = date
        self.next_id = first_id

    def make(self, kind: str) -> etree._Element:
        element = etree.Element(_w(kind))
        element.set(_w("id"), str(self.next_id))
        element.set(_w("author"), self.author)
        element.set(_w("date"), self.date)
        self.next_id += 1
        return element


def _as_deleted(element: etree._Element) -> None:
    """Turn the text of runs being deleted into deleted text (``w:delText``)."""
    for node in list(element.iter(_T, _w("instrText"))):
        node.tag = _DEL_TEXT if node.tag == _T else _w("delInstrText")


def _paragraph_mark(paragraph: etree._Element, kind: str, marks: _Marks) -> None:
    """Mark a paragraph's mark as inserted or deleted (``w:pPr/w:rPr/w:ins``)."""
    ppr = paragraph.find(_PPR)
    if ppr is None:
        ppr = etree.Element(_PPR)
        paragraph.insert(0, ppr)
    rpr = ppr.find(_RPR)
    if rpr is None:
        rpr = etree.Element(_RPR)
        later = [c for c in ppr if c.tag in (_w("sectPr"), _w("pPrChange"))]
        if later:
            later[0].addprevious(rpr)
        else:
            ppr.append(rpr)
    for old in rpr.findall(_INS) + rpr.findall(_DEL):
        rpr.remove(old)
    rpr.insert(0, marks.make(kind))


def _row_mark(row: etree._Element, kind: str, marks: _Marks) -> None:
    trpr = row.find(_w("trPr"))
    if trpr is None:
        trpr = etree.Element(_w("trPr"))
        exceptions = row.find(_w("tblPrEx"))
        if exceptions is not None:
            exceptions.addnext(trpr)
        else:
            row.insert(0, trpr)
    change = trpr.find(_w("trPrChange"))
    if change is not None:
        change.addprevious(marks.make(kind))
    else:
        trpr.append(marks.make(kind))


def _mark_whole(element: etree._Element, kind: str, marks: _Marks) -> None:
    """Mark everything in a block or inline container as inserted or deleted."""
    for run in list(element.iter(_R_RUN)):
        parent = run.getparent()
        if parent is None or parent.tag in (_INS, _DEL):
            continue
        wrapper = marks.make(kind)
        run.addprevious(wrapper)
        wrapper.append(run)
    if kind == "del":
        _as_deleted(element)
    for paragraph in element.iter(_P):
        _paragraph_mark(paragraph, kind, marks)
    for row in element.iter(_TR):
        _row_mark(row, kind, marks)


class _Copier:
    """Copies the earlier version's content into the later document, where it is deleted.

    Pictures and links point at relationships of their part: one the later part does not
    have with the same target is dropped from the copy (the words stay).
    """

    def __init__(self, old_rels: Mapping[str, str], new_rels: Mapping[str, str]) -> None:
        self.old_rels = old_rels
        self.new_rels = new_rels

    def copy(self, element: etree._Element) -> etree._Element:
        import copy

        copied = copy.deepcopy(element)
        for node in list(copied.iter()):
            if not isinstance(node.tag, str):
                continue
            if node.tag in _DROPPED_FROM_COPIES or node.tag in _RENDER_CACHES:
                self._remove(node)
                continue
            for name, value in list(node.attrib.items()):
                if name.startswith(f"{{{_R}}}") and self.old_rels.get(value) != \
                        self.new_rels.get(value):
                    if node.tag in (_w("hyperlink"),):
                        del node.attrib[name]
                    else:
                        self._remove_drawing(node)
                        break
        return copied

    @staticmethod
    def _remove(node: etree._Element) -> None:
        parent = node.getparent()
        if parent is not None:
            parent.remove(node)

    def _remove_drawing(self, node: etree._Element) -> None:
        # Remove the run's whole picture (w:drawing, w:pict, w:object) holding the reference.
        top = node
        while top.getparent() is not None and top.getparent().tag != _R_RUN:
            top = top.getparent()
        self._remove(top)


class _Comparison:
    """One redline in the making: the marks, the copier and the changed paragraphs."""

    def __init__(self, marks: _Marks, copier: _Copier, story: str) -> None:
        self.marks = marks
        self.copier = copier
        self.story = story
        self.changes: list[ChangedParagraph] = []

    # paragraphs -----------------------------------------------------------------------------

    def paragraph(self, old: etree._Element, new: etree._Element) -> None:
        """Rewrite ``new`` with the words that differ from ``old`` as tracked changes."""
        before, after = _read_paragraph(old), _read_paragraph(new)
        keys_a, keys_b = [a.key for a in before.atoms], [a.key for a in after.atoms]
        if keys_a == keys_b:
            return
        ops = _word_opcodes(keys_a, keys_b)
        writer = _ParagraphWriter(new, after.markers, self.marks)
        segments: list[Segment] = []
        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal":
                for offset in range(i2 - i1):
                    writer.atom(after.atoms[j1 + offset], "equal", before.atoms[i1 + offset])
                segments.append(Segment("equal", "".join(
                    a.visible for a in after.atoms[j1:j2])))
                continue
            for atom in before.atoms[i1:i2]:
                writer.atom(atom, "del")
            for atom in after.atoms[j1:j2]:
                writer.atom(atom, "ins")
            deleted = "".join(a.visible for a in before.atoms[i1:i2])
            inserted = "".join(a.visible for a in after.atoms[j1:j2])
            if deleted:
                segments.append(Segment("delete", deleted))
            if inserted:
                segments.append(Segment("insert", inserted))
        writer.finish(self.copier)
        self.changes.append(ChangedParagraph(self.story, tuple(_joined(segments))))

    def inserted(self, new: etree._Element) -> None:
        _mark_whole(new, "ins", self.marks)
        self._whole(new, "insert")

    def deleted(self, old: etree._Element) -> etree._Element:
        copied = self.copier.copy(old)
        _mark_whole(copied, "del", self.marks)
        self._whole(old, "delete")
        return copied

    def _whole(self, block: etree._Element, kind: SegmentKind) -> None:
        for paragraph in block.iter(_P):
            text = _read_paragraph(paragraph).text
            if text:
                self.changes.append(ChangedParagraph(self.story, (Segment(kind, text),)))

    # containers -----------------------------------------------------------------------------

    def blocks(self, old_parent: etree._Element | None, new_parent: etree._Element) -> None:
        """Align the blocks (paragraphs, tables, content controls) of two containers."""
        old_blocks = [c for c in old_parent if c.tag in _BLOCKS] if old_parent is not None \
            else []
        new_blocks = [c for c in new_parent if c.tag in _BLOCKS]
        self._align(old_blocks, new_blocks, new_parent, self._block_pair)

    def _align(self, old: Sequence[etree._Element], new: Sequence[etree._Element],
               new_parent: etree._Element, pair: Any) -> None:
        matcher = SequenceMatcher(None, [_block_key(b) for b in old],
                                  [_block_key(b) for b in new], autojunk=False)
        previous: etree._Element | None = None
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                previous = new[j2 - 1]
                continue
            for o, n in _pairs(old[i1:i2], new[j1:j2]):
                if n is not None:
                    if o is None:
                        self.inserted(n)
                    else:
                        pair(o, n)
                    previous = n
                else:
                    assert o is not None
                    copied = self.deleted(o)
                    _insert_after(new_parent, previous, copied)
                    previous = copied

    def _block_pair(self, old: etree._Element, new: etree._Element) -> None:
        if new.tag == _P:
            self.paragraph(old, new)
        elif new.tag == _TBL:
            self._table(old, new)
        else:
            old_content, new_content = old.find(_w("sdtContent")), new.find(_w("sdtContent"))
            if new_content is not None:
                self.blocks(old_content, new_content)

    def _table(self, old: etree._Element, new: etree._Element) -> None:
        self._align(old.findall(_TR), new.findall(_TR), new, self._row_pair)

    def _row_pair(self, old: etree._Element, new: etree._Element) -> None:
        old_cells, new_cells = old.findall(_TC), new.findall(_TC)
        if len(old_cells) != len(new_cells):
            # Cells merged or split: the row reads as the earlier row deleted, the later added.
            new.addprevious(self.deleted(old))
            self.inserted(new)
            return
        for old_cell, new_cell in zip(old_cells, new_cells, strict=True):
            self.blocks(old_cell, new_cell)


def _insert_after(parent: etree._Element, previous: etree._Element | None,
                  element: etree._Element) -> None:
    if previous is not None:
        previous.addnext(element)
        return
    index = 0
    for index, child in enumerate(parent):  # noqa: B007 - the index is used after the loop
        if not (isinstance(child.tag, str) and child.tag.endswith(_PROPERTY_SUFFIX)
                and child.tag != _w("sectPr")) and child.tag != _w("tblGrid"):
            break
    else:
        index = len(parent)
    parent.insert(index, element)


def _pairs(old: Sequence[etree._Element], new: Sequence[etree._Element]
           ) -> list[tuple[etree._Element | None, etree._Element | None]]:
    """Pair the blocks of a changed stretch: most alike first, in order; the rest alone."""
    if len(old) == 1 and len(new) == 1 and old[0].tag == new[0].tag:
        return [(old[0], new[0])]
    rows, cols = len(old), len(new)
    scores = [[0.0] * (cols + 1) for _ in range(rows + 1)]
    similar = [[_similarity(o, n) for n in new] for o in old]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            best = max(scores[i - 1][j], scores[i][j - 1])
            if similar[i - 1][j - 1] >= _SIMILAR:
                best = max(best, scores[i - 1][j - 1] + similar[i - 1][j - 1])
            scores[i][j] = best
    pairs: list[tuple[etree._Element | None, etree._Element | None]] = []
    i, j = rows, cols
    while i > 0 or j > 0:
        if i > 0 and j > 0 and similar[i - 1][j - 1] >= _SIMILAR and \
                scores[i][j] == scores[i - 1][j - 1] + similar[i - 1][j - 1]:
            pairs.append((old[i - 1], new[j - 1]))
            i, j = i - 1, j - 1
        elif j > 0 and (i == 0 or scores[i][j] == scores[i][j - 1]):
            pairs.append((None, new[j - 1]))
            j -= 1
        else:
            pairs.append((old[i - 1], None))
            i -= 1
    pairs.reverse()
    return pairs


def _word_opcodes(old: list[str], new: list[str]) -> list[tuple[str, int, int, int, int]]:
    """Compare two paragraphs' tokens; a change is one stretch of deleted then inserted words.

    Spaces alone between two changes belong to the change around them, so that "John Smith"
    becomes "Jane Doe" as one replacement rather than two joined by an unchanged space. A
    change on one side only slides to where it starts and ends on word boundaries: a date
    added to "June 12, 2006 and June 22, 2006" inserts " and July 1, 2006", not
    ", 2006 and July 1" after "June 22".
    """
    # Most of a paragraph is the same in both versions: compare only what lies between the
    # words they start and end with.
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    ops: list[tuple[str, int, int, int, int]] = [
        (tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in
           SequenceMatcher(None, old[head:len(old) - tail], new[head:len(new) - tail],
                           autojunk=False).get_opcodes()]
    if head:
        ops.insert(0, ("equal", 0, head, 0, head))
    if tail:
        ops.append(("equal", len(old) - tail, len(old), len(new) - tail, len(new)))
    merged: list[list[Any]] = []
    ops = _joined_ops(ops)
    for index, (tag, i1, i2, j1, j2) in enumerate(ops):
        island = (tag == "equal" and 0 < index < len(ops) - 1
                  and all(not t.strip() for t in old[i1:i2]))
        if tag != "equal" or island:
            if merged and merged[-1][0] == "change":
                merged[-1][2], merged[-1][4] = i2, j2
            else:
                merged.append(["change", i1, i2, j1, j2])
        else:
            merged.append(["equal", i1, i2, j1, j2])
    for index, op in enumerate(merged):
        if op[0] == "change" and 0 < index < len(merged) - 1:
            _slide(op, merged[index - 1], merged[index + 1], old, new)
    return [tuple(op) for op in merged if op[1] != op[2] or op[3] != op[4]]  # type: ignore[misc]


def _joined_ops(ops: list[tuple[str, int, int, int, int]]
                ) -> list[tuple[str, int, int, int, int]]:
    """Join neighbouring opcodes of the same kind (equal words around an empty middle)."""
    out: list[tuple[str, int, int, int, int]] = []
    for op in ops:
        if op[1] == op[2] and op[3] == op[4]:
            continue
        if out and out[-1][0] == op[0] == "equal":
            out[-1] = ("equal", out[-1][1], op[2], out[-1][3], op[4])
        else:
            out.append(op)
    return out


def _edge_score(before: str, after: str) -> int:
    """Score the edge between two texts: best before a space, then after one or between a
    word and a sign, worst inside a word."""
    if not before or not after or after[0].isspace():
        return 2
    if before[-1].isspace():
        return 1
    return 1 if before[-1].isalnum() != after[0].isalnum() else 0


def _slide(op: list[Any], previous: list[Any], following: list[Any], old: list[str],
           new: list[str]) -> None:
    """Move a pure insertion or deletion along the equal words around it (see
    :func:`_word_opcodes`); ``previous`` and ``following`` are the equal stretches."""
    _tag, i1, i2, j1, j2 = op
    if i1 != i2 and j1 != j2:
        return
    tokens, start, end = (new, j1, j2) if i1 == i2 else (old, i1, i2)
    prev_start = previous[3] if i1 == i2 else previous[1]
    next_end = following[4] if i1 == i2 else following[2]
    left = 0
    while start - left > prev_start and tokens[start - left - 1] == tokens[end - left - 1]:
        left += 1
    right = 0
    while end + right < next_end and tokens[start + right] == tokens[end + right]:
        right += 1

    def score(shift: int) -> tuple[int, bool, int]:
        s, e = start + shift, end + shift
        changed = "".join(tokens[s:e])
        edges = (_edge_score("".join(tokens[prev_start:s]), changed)
                 + _edge_score(changed, "".join(tokens[e:next_end])))
        # Then a change that ends with a word ("and July 1, 2006", not "2006 and July 1,").
        return edges, changed[-1:].isalnum(), -abs(shift)

    shift = max(range(-left, right + 1), key=score)
    if shift:
        op[1:] = [i1 + shift, i2 + shift, j1 + shift, j2 + shift]
        previous[2] += shift
        previous[4] += shift
        following[1] += shift
        following[3] += shift


def _joined(segments: Iterable[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if out and out[-1].kind == segment.kind:
            out[-1] = Segment(segment.kind, out[-1].text + segment.text)
        else:
            out.append(segment)
    return out


class _ParagraphWriter:
    """Rebuilds a paragraph's runs from compared pieces, wrapping changes in w:ins/w:del."""

    def __init__(self, paragraph: etree._Element, markers: dict[int, list[etree._Element]],
                 marks: _Marks) -> None:
        self.paragraph = paragraph
        self.markers = markers
        self.marks = marks
        self.position = 0  # pieces of the later version written so far
        self.wrapper: etree._Element | None = None
        self.wrapper_kind = ""
        self.run: etree._Element | None = None
        self.run_key: tuple[str, str, str] | None = None
        self.children: list[etree._Element] = []
        self.deleted_wholes: list[etree._Element] = []

    def _markers_until(self, position: int) -> None:
        for index in sorted(k for k in self.markers if k <= position):
            for marker in self.markers.pop(index):
                self._close()
                self.children.append(marker)

    def _close(self) -> None:
        self.run, self.run_key = None, None
        self.wrapper, self.wrapper_kind = None, ""

    def _container(self, kind: str) -> list[etree._Element] | etree._Element:
        if kind == "equal":
            self.wrapper, self.wrapper_kind = None, ""
            return self.children
        if self.wrapper is None or self.wrapper_kind != kind:
            self.wrapper = self.marks.make(kind)
            self.wrapper_kind = kind
            self.children.append(self.wrapper)
            self.run, self.run_key = None, None
        return self.wrapper

    def atom(self, atom: _Atom, kind: str, before: _Atom | None = None) -> None:
        """Write one piece: ``equal`` and ``ins`` pieces are the later version's, ``del``
        pieces the earlier one's; ``before`` is the earlier twin of an equal piece."""
        import copy

        if kind != "del":
            self._markers_until(self.position)
            self.position += 1
        if atom.whole:
            # A hyperlink or a content control holds its own runs, which carry the marks: a
            # w:ins or w:del may not hold the container itself.
            self._close()
            element = copy.deepcopy(atom.element)
            assert element is not None
            if kind != "equal":
                if kind == "del":
                    self.deleted_wholes.append(element)
                _mark_whole(element, kind, self.marks)
            self.children.append(element)
            return
        old_rpr = before.rpr_key if before is not None else atom.rpr_key
        key = (kind, atom.rpr_key, old_rpr)
        container = self._container(kind)
        if self.run is None or self.run_key != key:
            self.run = etree.Element(_R_RUN)
            if atom.rpr is not None:
                self.run.append(copy.deepcopy(atom.rpr))
            if before is not None and old_rpr != atom.rpr_key:
                self._format_change(self.run, before.rpr)
            self.run_key = key
            self._append(container, self.run)
        if atom.text is not None:
            tag = _DEL_TEXT if kind == "del" else _T
            last = self.run[-1] if len(self.run) else None
            if last is not None and last.tag == tag:
                last.text = (last.text or "") + atom.text
            else:
                node = etree.SubElement(self.run, tag)
                node.set(_XML_SPACE, "preserve")
                node.text = atom.text
        else:
            assert atom.element is not None
            element = copy.deepcopy(atom.element)
            if kind == "del":
                _as_deleted(element)
                if element.tag == _w("instrText"):
                    element.tag = _w("delInstrText")
            self.run.append(element)

    def _format_change(self, run: etree._Element, old_rpr: etree._Element | None) -> None:
        import copy

        rpr = run.find(_RPR)
        if rpr is None:
            rpr = etree.Element(_RPR)
            run.insert(0, rpr)
        change = self.marks.make("rPrChange")
        previous = etree.SubElement(change, _RPR)
        for child in (old_rpr if old_rpr is not None else []):
            previous.append(copy.deepcopy(child))
        rpr.append(change)

    @staticmethod
    def _append(container: list[etree._Element] | etree._Element,
                element: etree._Element) -> None:
        container.append(element)

    def finish(self, copier: _Copier) -> None:
        """Replace the paragraph's content (all but its properties) with what was written."""
        self._markers_until(self.position)
        self._markers_until(10**9)
        for child in list(self.paragraph):
            if child.tag != _PPR:
                self.paragraph.remove(child)
        for child in self.children:
            self.paragraph.append(child)
        for element in self.deleted_wholes:
            parent = element.getparent()
            if parent is not None:
                parent.replace(element, copier.copy(element))


# --- the package -----------------------------------------------------------------------------

def _rels_path(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def _relationships(files: Mapping[str, bytes], part: str) -> dict[str, tuple[str, str]]:
    """Map a part's relationship ids to (type, target part or external target)."""
    data = files.get(_rels_path(part))
    if data is None:
        return {}
    root = etree.fromstring(data)
    folder = posixpath.dirname(part)
    out = {}
    for rel in root.iter(f"{{{_REL}}}Relationship"):
        target = rel.get("Target", "")
        if rel.get("TargetMode") != "External":
            target = posixpath.normpath(posixpath.join(folder, target)).lstrip("/") \
                if not target.startswith("/") else target.lstrip("/")
        out[rel.get("Id", "")] = (rel.get("Type", ""), target)
    return out


def _main_part(files: Mapping[str, bytes]) -> str:
    for _rid, (kind, target) in _relationships(files, "").items():
        if kind in _OFFICE_DOCUMENT:
            return target
    return "word/document.xml"


def _read_package(data: bytes, name: str) -> tuple[list[zipfile.ZipInfo], dict[str, bytes]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            return infos, {info.filename: archive.read(info) for info in infos}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"{name}: not a Word document that can be read ({exc}).") from exc


def _parse(data: bytes, name: str) -> etree._Element:
    try:
        return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True,
                                                      huge_tree=True))
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"{name}: a part of the Word document is not XML ({exc}).") from exc


def _highest_id(files: Mapping[str, bytes]) -> int:
    highest = 0
    for name, data in files.items():
        if name.endswith(".xml"):
            for match in re.finditer(rb'w:id="(-?\d+)"', data):
                highest = max(highest, int(match.group(1)))
    return highest


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _notes(comparison: _Comparison, old_root: etree._Element | None,
           new_root: etree._Element) -> None:
    """Compare footnotes (or endnotes) by their ids; a note only in the earlier version is
    copied over as deleted, so that its deleted reference still finds it."""
    note = _w("footnote") if new_root.tag == _w("footnotes") else _w("endnote")
    old_notes = {n.get(_w("id")): n for n in (old_root.findall(note) if old_root is not None
                                              else [])}
    new_ids = set()
    for new_note in new_root.findall(note):
        new_ids.add(new_note.get(_w("id")))
        if new_note.get(_w("type")) in ("separator", "continuationSeparator",
                                        "continuationNotice"):
            continue
        old_note = old_notes.get(new_note.get(_w("id")))
        if old_note is None:
            comparison.inserted(new_note)
        else:
            comparison.blocks(old_note, new_note)
    for note_id, old_note in old_notes.items():
        if note_id not in new_ids:
            new_root.append(comparison.deleted(old_note))


def redline_docx(old: bytes, new: bytes, *, date: dt.datetime, author: str = AUTHOR,
                 old_name: str = "the earlier version", new_name: str = "the later version"
                 ) -> Redline:
    """Mark the words that differ between two .docx files as tracked changes of ``new``.

    Every change is signed by ``author`` at ``date`` (written ISO 8601, UTC). Raises
    DocumentError naming ``old_name`` or ``new_name`` for a file that is not a Word document.
    """
    _old_infos, old_files = _read_package(old, old_name)
    new_infos, new_files = _read_package(new, new_name)
    moment = date.astimezone(dt.UTC) if date.tzinfo else date
    stamp = moment.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    marks = _Marks(author, stamp, _highest_id(new_files) + 1)
    old_main, new_main = _main_part(old_files), _main_part(new_files)
    if new_main not in new_files:
        raise DocumentError(f"{new_name}: the Word document has no main part.")
    changes: list[ChangedParagraph] = []
    written: dict[str, bytes] = {}
    old_stories = {target: kind for _rid, (kind_url, target) in
                   _relationships(old_files, old_main).items()
                   if (kind := _STORY_TYPES.get(kind_url))}
    stories = [(new_main, old_main if old_main in old_files else None, "body")]
    for _rid, (kind_url, target) in _relationships(new_files, new_main).items():
        kind = _STORY_TYPES.get(kind_url)
        if kind and target in new_files:
            stories.append((target, target if old_stories.get(target) == kind else None, kind))
    for new_part, old_part, story in stories:
        new_root = _parse(new_files[new_part], new_name)
        old_root = _parse(old_files[old_part], old_name) if old_part else None
        copier = _Copier({k: v[1] for k, v in _relationships(old_files, old_part or "").items()},
                         {k: v[1] for k, v in _relationships(new_files, new_part).items()})
        comparison = _Comparison(marks, copier, story)
        if story == "body":
            new_body = new_root.find(_w("body"))
            old_body = old_root.find(_w("body")) if old_root is not None else None
            if new_body is None:
                raise DocumentError(f"{new_name}: the Word document has no body.")
            comparison.blocks(old_body, new_body)
        elif story in ("footnotes", "endnotes"):
            _notes(comparison, old_root, new_root)
        else:
            comparison.blocks(old_root, new_root)
        if comparison.changes or old_root is None:
            written[new_part] = _serialize(new_root)
        changes.extend(comparison.changes)
    for _rid, (kind_url, target) in _relationships(new_files, new_main).items():
        if kind_url.endswith("/settings") and target in new_files:
            # A view saved without markup ("w:revisionView") would hide the changes, in Word
            # and in LibreOffice's PDF alike: a redline opens showing them.
            settings = _parse(new_files[target], new_name)
            views = settings.findall(_w("revisionView"))
            for view in views:
                settings.remove(view)
            if views:
                written[target] = _serialize(settings)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in new_infos:
            data = written.get(info.filename, new_files[info.filename])
            copy_info = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy_info.compress_type = zipfile.ZIP_DEFLATED
            copy_info.external_attr = info.external_attr
            archive.writestr(copy_info, data)
    return Redline(buffer.getvalue(), tuple(changes))


def changed_sentences(paragraph: ChangedParagraph) -> list[tuple[Segment, ...]]:
    """Cut a changed paragraph into sentences and keep those holding a change.

    Sentence ends are found in the paragraph's text with both versions' words in it, so a
    deleted or inserted sentence stands alone rather than with the sentence before it.
    """
    whole = "".join(s.text for s in paragraph.segments)
    cuts = sorted({m.end() for m in _SENTENCE_END.finditer(whole)} | {len(whole)})
    sentences: list[list[Segment]] = [[]]
    offset = 0
    cut_index = 0
    for segment in paragraph.segments:
        text = segment.text
        start = offset
        while text:
            cut = cuts[cut_index]
            take = min(len(text), cut - start)
            if take > 0:
                sentences[-1].append(Segment(segment.kind, text[:take]))
                text, start = text[take:], start + take
            if start >= cut and cut_index < len(cuts) - 1:
                cut_index += 1
                sentences.append([])
        offset += len(segment.text)
    kept = []
    for sentence in sentences:
        while sentence and not sentence[-1].text.strip():
            sentence.pop()  # the spaces after a sentence are not part of it
        if sentence and sentence[-1].kind == "equal":
            sentence[-1] = Segment("equal", sentence[-1].text.rstrip())
        if any(x.kind != "equal" and x.text.strip() for x in sentence):
            kept.append(tuple(_joined(sentence)))
    return kept


# --- letters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LetterRedline:
    """The redline between two versions of a letter, and what it is called."""

    letter_id: int
    from_number: int
    to_number: int
    date: dt.datetime
    redline: Redline
    filename_stem: str

    @property
    def docx(self) -> bytes:
        """The tracked-changes .docx."""
        return self.redline.docx


def revision_date(version: LetterVersion) -> dt.datetime:
    """Return the date a version's changes are tracked at: when it was made, in UTC."""
    made = version.created_at
    return made.replace(tzinfo=dt.UTC) if made.tzinfo is None else made.astimezone(dt.UTC)


def _version(session: Session, letter: Letter, number: int, parameter: str) -> LetterVersion:
    version = session.scalar(select(LetterVersion).where(
        LetterVersion.letter_id == letter.id, LetterVersion.number == number))
    if version is None:
        raise NotFoundError(f"{parameter}: letter {letter.id} has no version {number}; its "
                            f"versions are 1 to {letter.current_version}.")
    return version


def version_docx(session: Session, version: LetterVersion) -> bytes:
    """Return the .docx a version was generated as (its stored ``letter_docx``)."""
    from .letters import document_bytes

    document = session.scalar(select(Document).where(
        Document.version_id == version.id, Document.kind == "letter_docx")
        .order_by(Document.id.desc()))
    if document is None:
        raise NotFoundError(f"Version {version.number} of letter {version.letter_id} has no "
                            ".docx.")
    return document_bytes(session, document)


def letter_redline(session: Session, letter_id: int, from_number: int | None = None,
                   to_number: int | None = None) -> LetterRedline:
    """Compare two versions of a letter: ``from_number``'s words deleted, ``to_number``'s
    inserted, dated when ``to_number`` was made.

    ``to_number`` defaults to the newest version and ``from_number`` to the one before it.
    Raises NotFoundError naming ``from`` or ``to`` for a version the letter does not have,
    and StateError when they are the same version.
    """
    from .letters import get_letter

    letter = get_letter(session, letter_id)
    to_number = letter.current_version if to_number is None else to_number
    new = _version(session, letter, to_number, "to")
    if from_number is None:
        if to_number <= 1:
            raise NotFoundError(f"from: version {to_number} is the first version of letter "
                                f"{letter.id}; there is no version before it to compare with.")
        from_number = to_number - 1
    if from_number == to_number:
        raise StateError(f"from and to are both version {from_number}; compare two different "
                         "versions.")
    old = _version(session, letter, from_number, "from")
    date = revision_date(new)
    redline = redline_docx(version_docx(session, old), version_docx(session, new), date=date,
                           old_name=f"version {from_number}", new_name=f"version {to_number}")
    return LetterRedline(letter.id, from_number, to_number, date, redline,
                         f"{letter.file_stem}-v{from_number}-to-v{to_number}-redline")


def changed_terms(fields: Iterable[str], old: Mapping[str, Any], new: Mapping[str, Any]
                  ) -> dict[str, tuple[Any, Any]]:
    """List the terms whose stored (JSON) values differ: ``{key: (old, new)}``.

    ``fields`` gives the order (a schema's field keys); keys only one version has come last.
    """
    order = list(dict.fromkeys([*fields, *old, *new]))
    return {key: (old.get(key), new.get(key)) for key in order
            if old.get(key) != new.get(key)}
