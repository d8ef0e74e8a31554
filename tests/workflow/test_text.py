"""Names for searching and for file names: letters transliterated, never dropped."""

from __future__ import annotations

import pytest

from workflow.text import file_slug, search_patterns, search_text


@pytest.mark.parametrize("name, slug", [
    ("John R. Tucker", "john-r-tucker"),
    ("Søren Ærø", "soren-aero"),
    ("øre", "ore"),
    ("Đặng Văn Lâm", "dang-van-lam"),
    ("Zoe\u0308 Dupre\u0301", "zoe-dupre"),  # decomposed accents
    ("Zoë Dupré", "zoe-dupre"),
    ("Łukasz Straße", "lukasz-strasse"),
    ("Œuvre Ðorđe Þór", "oeuvre-dorde-thor"),
    ("李小龍", "lixiaolong"),
    ("!!!", "letter"),
])
def test_file_slug_transliterates(name, slug):
    assert file_slug(name) == slug


def test_file_slug_is_bounded_and_never_ends_in_a_dash():
    slug = file_slug("Ann " * 40)
    assert len(slug) <= 60 and not slug.endswith("-")


def test_search_text_holds_each_name_as_written_and_transliterated():
    text = search_text(["Zoë Dupré", "", "Société Générale"])
    assert text.splitlines() == ["zoë dupré", "zoe dupre", "société générale",
                                 "societe generale"]


def test_search_patterns_escape_like_wildcards():
    assert search_patterns("50%_a\\b") == ["%50\\%\\_a\\\\b%"]
    assert search_patterns("Zoë") == ["%zoë%", "%zoe%"]
