"""The reply parser accepts every format in every language, and refuses what it cannot use."""

import pytest

from visinstruct.generate.parse import ReplyParseError, parse_description, parse_pairs

CASES = {
    "llava blocks": ("Question:\nWhat is on the table?\n===\nAnswer:\nA cup of coffee.\n===\n"
                     "Question:\nWhat colour is it?\n===\nAnswer:\nRed.\n===\n"),
    "user/assistant": "User: What is on the table?\nAssistant: A cup of coffee.\nUser: What colour is it?\n"
                      "Assistant: Red.",
    "user/gpt": "User: What is on the table?\nGPT: A cup of coffee.\n\nUser: What colour is it?\nGPT: Red.\n",
    "bold labels": "**Question:** What is on the table?\n**Answer:** A cup of coffee.\n\n"
                   "**Question**: What colour is it?\n**Answer**: Red.",
    "numbered": "1. Question: What is on the table?\n   Answer: A cup of coffee.\n"
                "2. Question: What colour is it?\n   Answer: Red.",
    "Q1/A1": "Q1: What is on the table?\nA1: A cup of coffee.\nQ2: What colour is it?\nA2: Red.",
    "topic line": "Topic: a coffee break\n\nQuestion: What is on the table?\nAnswer: A cup of coffee.\n"
                  "Question: What colour is it?\nAnswer: Red.",
    "trailing incomplete": "Question: What is on the table?\nAnswer: A cup of coffee.\n"
                           "Question: What colour is it?\nAnswer: Red.\nQuestion: And the spoon",
    "extra blank lines": "\n\nQuestion: What is on the table?\n\n\nAnswer: A cup of coffee.\n\n\n\n"
                        "Question: What colour is it?\n\nAnswer: Red.\n\n",
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
])
def test_russian_formats(reply: str) -> None:
    assert parse_pairs(reply) == [("Что на столе?", "Чашка кофе."), ("Какого она цвета?", "Красная.")]


@pytest.mark.parametrize("reply", [
    "问题：桌上有什么？\n回答：一杯咖啡。\n问题：它是什么颜色的？\n回答：红色。",
    "用户：桌上有什么？\n助手：一杯咖啡。\n用户：它是什么颜色的？\n助手：红色。",
    "问题: 桌上有什么？\n回答: 一杯咖啡。\n\n问题: 它是什么颜色的？\n回答: 红色。\n问题：还有",
    "主题：咖啡\n**问题：**桌上有什么？\n**回答：**一杯咖啡。\n1. 问题：它是什么颜色的？\n回答：红色。",
])
def test_chinese_formats(reply: str) -> None:
    assert parse_pairs(reply) == [("桌上有什么？", "一杯咖啡。"), ("它是什么颜色的？", "红色。")]


def test_multiline_answer_kept_and_content_colons_untouched() -> None:
    reply = "问题：图中有哪些物体？\n回答：有以下物体：\n一只猫；\n一张桌子。"
    assert parse_pairs(reply) == [("图中有哪些物体？", "有以下物体：\n一只猫；\n一张桌子。")]


def test_truncated_reply_drops_the_possibly_cut_last_answer() -> None:
    reply = "User: A?\nAssistant: Yes, it is.\nUser: B?\nAssistant: It has a long answer that was cu"
    assert parse_pairs(reply, truncated=True) == [("A?", "Yes, it is.")]
    assert len(parse_pairs(reply, truncated=False)) == 2
    cut = "User: A?\nAssistant: First sentence. Second one is cu"
    assert parse_pairs(cut, truncated=True) == [("A?", "First sentence.")]


@pytest.mark.parametrize("reply, reason", [
    ("I'm sorry, I can't help with that.", "no question/answer labels"),
    ("", "no question/answer labels"),
    ("Question: What is it?\n", "no complete question/answer pair"),
    ("Question: What?\nAnswer:\nQuestion: Why?", "no complete question/answer pair"),
])
def test_unparseable_replies_raise_with_a_reason(reply: str, reason: str) -> None:
    with pytest.raises(ReplyParseError, match=reason):
        parse_pairs(reply)


def test_description_whole_reply_and_truncation_to_last_sentence() -> None:
    assert parse_description("  The cat sleeps.\n\nIt is warm.  ") == "The cat sleeps.\n\nIt is warm."
    assert parse_description("Answer: The cat sleeps.") == "The cat sleeps."
    assert parse_description("The cat sleeps. It is wa", truncated=True) == "The cat sleeps."
    assert parse_description("猫在睡觉。它很暖", truncated=True) == "猫在睡觉。"
    with pytest.raises(ReplyParseError):
        parse_description("   ")
    with pytest.raises(ReplyParseError):
        parse_description("The cat sleeps on a", truncated=True)
