"""The reply parser accepts every label family in every language, splits SVIT topic conversations, and refuses
what it cannot use; the generate stage writes one record per topic, the same again when rebuilt from the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import read_records, run_cli
from teacher_server import ServerThread, TeacherServer
from visinstruct.generate.parse import (
    LABELS,
    ReplyParseError,
    parse_conversations,
    parse_description,
    parse_pairs,
)

CASES = {
    "llava blocks": ("Question:\nWhat is on the table?\n===\nAnswer:\nA cup of coffee.\n===\n"
                     "Question:\nWhat colour is it?\n===\nAnswer:\nRed.\n===\n"),
    "user/assistant": "User: What is on the table?\nAssistant: A cup of coffee.\nUser: What colour is it?\n"
                      "Assistant: Red.",
    "user/gpt": "User: What is on the table?\nGPT: A cup of coffee.\n\nUser: What colour is it?\nGPT: Red.\n",
    "human/ai": "Human: What is on the table?\nAI: A cup of coffee.\nHuman: What colour is it?\nAI: Red.",
    "bold labels": "**Question:** What is on the table?\n**Answer:** A cup of coffee.\n\n"
                   "**Question**: What colour is it?\n**Answer**: Red.",
    "numbered": "1. Question: What is on the table?\n   Answer: A cup of coffee.\n"
                "2. Question: What colour is it?\n   Answer: Red.",
    "Q1/A1": "Q1: What is on the table?\nA1: A cup of coffee.\nQ2: What colour is it?\nA2: Red.",
    "Question 2": "Question 1: What is on the table?\nAnswer 1: A cup of coffee.\n"
                  "Question 2: What colour is it?\nAnswer 2: Red.",
    "headers": "### Question\nWhat is on the table?\n\n### Answer\nA cup of coffee.\n\n"
               "### Question 2\nWhat colour is it?\n### Answer 2\nRed.\n",
    "bold headers": "**Question 1**\nWhat is on the table?\n**Answer 1**\nA cup of coffee.\n---\n"
                    "**Question 2**\nWhat colour is it?\n**Answer 2**\nRed.",
    "topic line": "Topic: a coffee break\n\nQuestion: What is on the table?\nAnswer: A cup of coffee.\n"
                  "Question: What colour is it?\nAnswer: Red.",
    "trailing incomplete": "Question: What is on the table?\nAnswer: A cup of coffee.\n"
                           "Question: What colour is it?\nAnswer: Red.\nQuestion: And the spoon",
    "extra blank lines": "\n\nQuestion: What is on the table?\n\n\nAnswer: A cup of coffee.\n\n\n\n"
                        "Question: What colour is it?\n\nAnswer: Red.\n\n",
    "full-width colons": "Q：What is on the table?\nA：A cup of coffee.\nQ：What colour is it?\nA：Red.",
}


@pytest.mark.parametrize("name", CASES)
def test_english_formats(name: str) -> None:
    assert parse_pairs(CASES[name]) == [("What is on the table?", "A cup of coffee."), ("What colour is it?", "Red.")]


@pytest.mark.parametrize("reply", [
    "Вопрос: Что на столе?\nОтвет: Чашка кофе.\nВопрос: Какого она цвета?\nОтвет: Красная.",
    "Пользователь: Что на столе?\nАссистент: Чашка кофе.\nПользователь: Какого она цвета?\nАссистент: Красная.",
    "**Вопрос：** Что на столе?\n**Ответ：** Чашка кофе.\n**Вопрос：** Какого она цвета?\n**Ответ：** Красная.",
    "Тема: кофе\n\nВопрос:\nЧто на столе?\n===\nОтвет:\nЧашка кофе.\n===\nВопрос:\nКакого она цвета?\n===\n"
    "Ответ:\nКрасная.\n===\nВопрос: А ложка",
    "В: Что на столе?\nО: Чашка кофе.\nВ: Какого она цвета?\nО: Красная.",
    "В1: Что на столе?\nО1: Чашка кофе.\nВ2: Какого она цвета?\nО2: Красная.",
    "Вопрос 1: Что на столе?\nОтвет 1: Чашка кофе.\nВопрос 2: Какого она цвета?\nОтвет 2: Красная.",
    "### Вопрос 1\nЧто на столе?\n### Ответ 1\nЧашка кофе.\n### Вопрос 2\nКакого она цвета?\n### Ответ 2\nКрасная.",
    "Человек: Что на столе?\nПомощник: Чашка кофе.\nЧеловек: Какого она цвета?\nПомощник: Красная.",
])
def test_russian_formats(reply: str) -> None:
    assert parse_pairs(reply) == [("Что на столе?", "Чашка кофе."), ("Какого она цвета?", "Красная.")]


@pytest.mark.parametrize("reply", [
    "问题：桌上有什么？\n回答：一杯咖啡。\n问题：它是什么颜色的？\n回答：红色。",
    "用户：桌上有什么？\n助手：一杯咖啡。\n用户：它是什么颜色的？\n助手：红色。",
    "问题: 桌上有什么？\n回答: 一杯咖啡。\n\n问题: 它是什么颜色的？\n回答: 红色。\n问题：还有",
    "主题：咖啡\n**问题：**桌上有什么？\n**回答：**一杯咖啡。\n1. 问题：它是什么颜色的？\n回答：红色。",
    # the real Chinese LLaVA-style family: ASCII colon after 问题, full-width after 答案, === between
    "问题:\n桌上有什么？\n===\n答案：\n一杯咖啡。\n===\n问题:\n它是什么颜色的？\n===\n答案：\n红色。\n===\n",
    "问：桌上有什么？\n答：一杯咖啡。\n问：它是什么颜色的？\n答：红色。",
    "Q：桌上有什么？\nA：一杯咖啡。\nQ：它是什么颜色的？\nA：红色。",
    "**问题**：桌上有什么？\n**答案**：一杯咖啡。\n**问题**：它是什么颜色的？\n**答案**：红色。",
    "问题1：桌上有什么？\n答案1：一杯咖啡。\n问题2：它是什么颜色的？\n答案2：红色。",
    "### 问题\n桌上有什么？\n### 答案\n一杯咖啡。\n### 问题\n它是什么颜色的？\n### 答案\n红色。",
])
def test_chinese_formats(reply: str) -> None:
    assert parse_pairs(reply) == [("桌上有什么？", "一杯咖啡。"), ("它是什么颜色的？", "红色。")]


@pytest.mark.parametrize("lang", sorted(LABELS))
def test_every_label_of_the_table_opens_its_turn(lang: str) -> None:
    labels = LABELS[lang]
    for question in labels.question:
        for answer in labels.answer:
            assert parse_pairs(f"{question}: one?\n{answer}： two.") == [("one?", "two.")], (question, answer)
    for topic in labels.topic:
        reply = f"{topic}: x\nQ: a?\nA: b.\n{topic} 2： y\nQ: c?\nA: d."
        assert [(c.topic, c.pairs) for c in parse_conversations(reply)] == [("x", [("a?", "b.")]),
                                                                             ("y", [("c?", "d.")])]
    for word in labels.conversation:
        reply = f"### {word} 1\nQ: a?\nA: b.\n### {word} 2\nQ: c?\nA: d."
        assert [c.pairs for c in parse_conversations(reply)] == [[("a?", "b.")], [("c?", "d.")]]


def test_multiline_answer_kept_and_content_colons_untouched() -> None:
    reply = "问题：图中有哪些物体？\n回答：有以下物体：\n一只猫；\n一张桌子。"
    assert parse_pairs(reply) == [("图中有哪些物体？", "有以下物体：\n一只猫；\n一张桌子。")]


@pytest.mark.parametrize("reply", [
    "В парке гуляют люди. О чём они говорят, не слышно.\nВ центре стоит фонтан.\nО погоде: тепло и ясно.",
    "A man rides a horse along the beach.\nA woman: she walks beside him.\nQuestions remain about the dog.",
    "问题在于：光线太暗。\n答案很简单：开灯。",
    "Useful tips: bring water.\nAnswers vary.",
])
def test_sentences_that_start_like_labels_are_not_labels(reply: str) -> None:
    with pytest.raises(ReplyParseError, match="no question/answer labels"):
        parse_pairs(reply)
    inside = parse_pairs(f"Question: What is there?\nAnswer: Look.\n{reply}")
    assert inside == [("What is there?", f"Look.\n{reply}")]


def test_truncated_reply_drops_the_possibly_cut_last_answer() -> None:
    reply = "User: A?\nAssistant: Yes, it is.\nUser: B?\nAssistant: It has a long answer that was cu"
    assert parse_pairs(reply, truncated=True) == [("A?", "Yes, it is.")]
    assert len(parse_pairs(reply, truncated=False)) == 2
    cut = "User: A?\nAssistant: First sentence. Second one is cu"
    assert parse_pairs(cut, truncated=True) == [("A?", "First sentence.")]
    # a reply cut after a label: the answers before it ended, nothing is trimmed
    assert parse_pairs("User: A?\nAssistant: Yes. Sure\nUser: B", truncated=True) == [("A?", "Yes. Sure")]


def test_truncation_cuts_only_the_last_topic() -> None:
    reply = "Topic: one\nUser: A?\nGPT: Yes. Fine\n\nTopic: two\nUser: B?\nGPT: Sure. And th"
    conversations = parse_conversations(reply, truncated=True)
    assert [(c.topic, c.pairs) for c in conversations] == [("one", [("A?", "Yes. Fine")]), ("two", [("B?", "Sure.")])]
    only_cut = "Topic: one\nUser: A?\nGPT: Yes.\nTopic: two\nUser: B?\nGPT: no sentence end"
    assert [c.topic for c in parse_conversations(only_cut, truncated=True)] == ["one"]


SVIT_REPLY = """Here are three conversations about the image.

**Topic 1: The kite**
User: What colour is the kite?
GPT: It is red.
User: Where is it flying?
GPT: Above a park.

Conversation 2 (Topic: the weather)
User: Is it windy?
GPT: Yes, it looks windy.

### Topic 3
Planning a picnic
1. User: Is it a good day for a picnic?
GPT: Yes, the sky is clear.
"""


def test_svit_topics_split_into_conversations() -> None:
    conversations = parse_conversations(SVIT_REPLY)
    assert [(c.topic, c.pairs) for c in conversations] == [
        ("The kite", [("What colour is the kite?", "It is red."), ("Where is it flying?", "Above a park.")]),
        ("the weather", [("Is it windy?", "Yes, it looks windy.")]),
        ("Planning a picnic", [("Is it a good day for a picnic?", "Yes, the sky is clear.")]),
    ]
    assert len(parse_pairs(SVIT_REPLY)) == 4  # all conversations in a row
    zh = "主题：颜色\n用户：风筝是什么颜色？\n助手：红色。\n\n**主题2：** 天气\n用户：有风吗？\n助手：有风。"
    assert [c.topic for c in parse_conversations(zh)] == ["颜色", "天气"]
    ru = "Тема: цвет\nВ: Какого цвета змей?\nО: Красного.\nДиалог 2. Тема: погода\nВ: Ветрено?\nО: Да."
    assert [(c.topic, len(c.pairs)) for c in parse_conversations(ru)] == [("цвет", 1), ("погода", 1)]
    untitled = "### Conversation 1\nQ: a?\nA: b.\n### Conversation 2\nQ: c?\nA: d."
    assert [(c.topic, len(c.pairs)) for c in parse_conversations(untitled)] == [(None, 1), (None, 1)]
    assert [(c.topic, len(c.pairs)) for c in parse_conversations("Q: a?\nA: b.\nQ: c?\nA: d.")] == [(None, 2)]
    empty_topic = "Topic: one\nQ: a?\nA: b.\nTopic: two\nTopic: three\nQ: c?\nA: d."
    assert [c.topic for c in parse_conversations(empty_topic)] == ["one", "three"]


@pytest.mark.parametrize("reply, reason", [
    ("I'm sorry, I can't help with that.", "no question/answer labels"),
    ("", "no question/answer labels"),
    ("Topic: the weather\nIt is sunny.", "no question/answer labels"),
    ("Question: What is it?\n", "no complete question/answer pair"),
    ("Question: What?\nAnswer:\nQuestion: Why?", "no complete question/answer pair"),
])
def test_unparseable_replies_raise_with_a_reason(reply: str, reason: str) -> None:
    with pytest.raises(ReplyParseError, match=reason):
        parse_pairs(reply)


def test_description_whole_reply_and_truncation_to_last_sentence() -> None:
    assert parse_description("  The cat sleeps.\n\nIt is warm.  ") == "The cat sleeps.\n\nIt is warm."
    assert parse_description("Answer: The cat sleeps.") == "The cat sleeps."
    assert parse_description("### Answer\nThe cat sleeps.\nIt is warm.") == "The cat sleeps.\nIt is warm."
    assert parse_description("答：猫在睡觉。") == "猫在睡觉。"
    assert parse_description("A cat sleeps: it is warm.") == "A cat sleeps: it is warm."
    assert parse_description("The cat sleeps. It is wa", truncated=True) == "The cat sleeps."
    assert parse_description("猫在睡觉。它很暖", truncated=True) == "猫在睡觉。"
    with pytest.raises(ReplyParseError):
        parse_description("   ")
    with pytest.raises(ReplyParseError):
        parse_description("The cat sleeps on a", truncated=True)


# ---- fuzz: random conversations rendered in every family and style parse back exactly ----

FAMILIES = [("Question", "Answer"), ("Q", "A"), ("User", "Assistant"), ("User", "GPT"), ("Human", "AI"),
            ("Human", "GPT"), ("Вопрос", "Ответ"), ("В", "О"), ("Пользователь", "Ассистент"),
            ("问题", "答案"), ("问题", "回答"), ("问", "答"), ("用户", "助手")]
# every line of a generated text starts with one of these words, none of them a label
FIRST_WORDS = {"en": ("The", "This", "There", "Two", "Some"), "ru": ("Здесь", "Это", "На", "Мы", "Люди"),
               "zh": ("图中", "这张", "画面", "我们", "桌上")}
LETTERS = {"en": "abcdefghijklmnopqrstuvwxyz", "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
           "zh": "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天"}
ENDINGS = {"en": ("", ".", "?", "!", ":", ", ok."), "ru": ("", ".", "?", "!", ":", ", да."),
           "zh": ("", "。", "？", "！", "：", "，好。")}
GAPS = ("\n", "\n\n", "\n===\n", "\n\n===\n\n", "\n---\n")


@st.composite
def _line(draw: st.DrawFn, lang: str) -> str:
    words = draw(st.lists(st.text(LETTERS[lang], min_size=1, max_size=7), max_size=6))
    joiner = "" if lang == "zh" else " "
    return joiner.join([draw(st.sampled_from(FIRST_WORDS[lang])), *words]) + draw(st.sampled_from(ENDINGS[lang]))


@st.composite
def _text(draw: st.DrawFn) -> str:
    lang = draw(st.sampled_from(sorted(FIRST_WORDS)))
    lines = draw(st.lists(_line(lang), min_size=1, max_size=3))
    return ("\n\n" if draw(st.booleans()) else "\n").join(lines)


def _head(draw: st.DrawFn, label: str, n: int, role: str) -> str:
    """A label in a drawn style, with the separator that leads to its text."""
    if len(label) > 1 and draw(st.booleans()):
        label = f"{label} {n}"
    elif draw(st.booleans()):
        label = f"{label}{n}"
    colon = draw(st.sampled_from(":："))
    layout = draw(st.sampled_from(["inline", "tight", "next line", "header", "bold header"]))
    if layout == "header":
        return f"{draw(st.sampled_from(['#', '###']))} {label}{draw(st.sampled_from(['', colon]))}\n"
    if layout == "bold header":
        return f"**{label}**\n"
    bold = draw(st.sampled_from(["{l}{c}", "**{l}**{c}", "**{l}{c}**"])).format(l=label, c=colon)
    numbering = f"{n}. " if role == "q" and draw(st.booleans()) else ""
    return numbering + bold + {"inline": " ", "tight": "", "next line": "\n"}[layout]


def _topic_line(draw: st.DrawFn, topic: str, k: int) -> str:
    style = draw(st.sampled_from(["Topic: {t}", "**Topic:** {t}", "**Topic {k}:** {t}", "主题：{t}", "Тема {k}: {t}",
                                  "Conversation {k} (Topic: {t})", "### Topic\n{t}", "### Conversation {k}: {t}",
                                  "{k}. Topic: {t}"]))
    return style.format(t=topic, k=k)


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, list[tuple[str | None, list[tuple[str, str]]]]]:
    """(a rendered reply, its conversations as (topic, pairs))."""
    question, answer = draw(st.sampled_from(FAMILIES))
    pairs = st.lists(st.tuples(_text(), _text()), min_size=1, max_size=4)
    conversations = draw(st.lists(pairs, min_size=1, max_size=3))
    with_topics = len(conversations) > 1 or draw(st.booleans())
    gap = draw(st.sampled_from(GAPS))
    blocks, expected = [], []
    for k, conversation in enumerate(conversations, start=1):
        topic = draw(_line("en")) if with_topics else None
        if topic is not None:
            blocks.append(_topic_line(draw, topic, k))
        for n, (q, a) in enumerate(conversation, start=1):
            blocks.append(_head(draw, question, n, "q") + q)
            blocks.append(_head(draw, answer, n, "a") + a)
        expected.append((topic, conversation))
    return gap.join(blocks) + draw(st.sampled_from(["", "\n", gap])), expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_fuzz_every_family_and_style_round_trips(case: tuple[str, list]) -> None:
    reply, expected = case
    assert [(c.topic, c.pairs) for c in parse_conversations(reply)] == expected, reply
    assert parse_pairs(reply) == [pair for _, pairs in expected for pair in pairs]


# ---- through the CLI: one record per topic, the same records when rebuilt from the ledger ----

PLAIN_REPLY = "Question: What is shown?\nAnswer: A dog on a lawn."
ZH_TOPICS_REPLY = "主题：颜色\n用户：风筝是什么颜色？\n助手：红色。\n\n主题：天气\n用户：有风吗？\n助手：有风。"


class TopicTeacher(TeacherServer):
    """Replies by a marker word in the scene: three topics, none, or two (Chinese labels)."""

    async def handle(self, request):  # type: ignore[override]
        from aiohttp import web

        body = json.loads(await request.read())
        self.received.append(body["messages"][-1]["content"])
        scene = body["messages"][-1]["content"]
        text = SVIT_REPLY if "MULTI3" in scene else ZH_TOPICS_REPLY if "MULTI2" in scene else PLAIN_REPLY
        return web.json_response({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 20}})


def test_generate_writes_one_record_per_topic_and_rebuilds_them(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes.jsonl"
    rows = [{"id": f"{100 + i}", "image": f"{100 + i}.jpg", "captions": [f"{marker} A kite over a park."],
             "instances": []} for i, marker in enumerate(["MULTI3", "PLAIN", "MULTI2"])]
    scenes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out, report = tmp_path / "out.json", tmp_path / "report.json"
    server = ServerThread(TopicTeacher())
    try:
        args = ["generate", "--caps-boxes", str(scenes), "--out", str(out), "--base-url", server.base_url,
                "--model", "m", "--tasks", "conversation"]
        first = run_cli(*args, "--report", str(report))
        assert first.returncode == 0, first.stderr
        assert "done: 3" in first.stderr and "(6 records)" in first.stderr
        records = read_records(out)
        assert [(r["id"], r.get("topic")) for r in records] == [
            ("100-conversation-0-t0", "The kite"), ("100-conversation-0-t1", "the weather"),
            ("100-conversation-0-t2", "Planning a picnic"), ("101-conversation-0", None),
            ("102-conversation-0-t0", "颜色"), ("102-conversation-0-t1", "天气")]
        assert [len(r["conversations"]) for r in records] == [4, 2, 2, 2, 2, 2]
        assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in records)
        assert records[1]["conversations"][1]["value"] == "Yes, it looks windy."
        assert {r["image"] for r in records[:3]} == {"100.jpg"} and {r["task"] for r in records} == {"conversation"}
        stats = json.loads(report.read_text())
        assert stats["records_out"] == 6 and stats["steps"]["teacher"]["out"] == 3
        written = out.read_bytes()
        again = run_cli(*args)  # resumed: nothing asked again, the same records
        assert again.returncode == 0 and "from ledger: 3" in again.stderr and "(6 records)" in again.stderr
        assert out.read_bytes() == written
        out.unlink()  # rebuilt from the ledger alone
        assert run_cli(*args).returncode == 0 and out.read_bytes() == written
        assert len(server.server.received) == 3
    finally:
        server.stop()
    assert read_records(tmp_path / "out.rejects.jsonl") == []
