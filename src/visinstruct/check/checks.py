"""The per-record checks on a readable Shape: turn order, empty turns, `<image>` tokens against images and
where the token stands. Each returns (kind, detail) pairs; the target's table says how bad each kind is."""

from __future__ import annotations

from ..core.records import IMAGE_TOKEN
from .shape import Problem, Turn
from .targets import Target


def _start(turns: list[Turn]) -> int:
    """Index of the first conversation turn (after a leading system turn)."""
    return 1 if turns and turns[0].role == "system" else 0


def empty_problems(turns: list[Turn]) -> list[Problem]:
    """Turns whose text is empty or whitespace only (a lone `<image>` is not empty: it is a prompt)."""
    empty = [n for n, turn in enumerate(turns) if not turn.value.strip()]
    if not empty:
        return []
    which = ", ".join(map(str, empty))
    return [("empty_value", f"turn{'s' if len(empty) > 1 else ''} {which} "
                            f"{'are' if len(empty) > 1 else 'is'} empty or whitespace only")]


def order_problems(turns: list[Turn]) -> list[Problem]:
    """Does it start with a question, alternate question/answer, and end with an answer?"""
    if any(not turn.role for turn in turns):
        return []  # an unknown role is already reported; the order means nothing then
    start = _start(turns)
    if start == len(turns):
        return [("layout", "only a system turn: nothing to train")]
    problems: list[Problem] = []
    if turns[start].role == "assistant":
        problems.append(("first_turn", f"turn {start} is from {turns[start].written!r}: the conversation opens "
                                       "with an answer"))
        start += 1
    expected = "user"
    for n in range(start, len(turns)):
        if turns[n].role != expected:
            problems.append(("alternation", f"turn {n} is from {turns[n].written!r} after another "
                                            f"{turns[n].written!r} turn (expected a {expected} turn)"))
            break
        expected = "assistant" if expected == "user" else "user"
    if len(turns) > start and turns[-1].role == "user":
        problems.append(("last_turn", f"the last turn ({len(turns) - 1}) is from {turns[-1].written!r}: "
                                      "a question with no answer"))
    return problems


def first_user(turns: list[Turn]) -> int | None:
    """Index of the first human/user turn."""
    return next((n for n, turn in enumerate(turns) if turn.role == "user"), None)


def token_problems(turns: list[Turn], images: list[str], target: Target) -> list[Problem]:
    """`<image>` tokens as the target counts them against the record's images, then where a lone one stands."""
    counts = [turn.value.count(IMAGE_TOKEN) for turn in turns]
    holding = [n for n, count in enumerate(counts) if count]
    tokens = len(holding) if target.collapse_per_turn else sum(counts)
    n = len(images)
    if tokens == 0 and n == 0:
        return []
    if tokens == 0:
        if target.applies("image_untagged") and (target.untagged_max is None or n <= target.untagged_max):
            return [("image_untagged", f"{n} image{'s' if n > 1 else ''} and no {IMAGE_TOKEN} token")]
        return [("image_token_count", f"no {IMAGE_TOKEN} token for {n} image{'s' if n > 1 else ''}")]
    if tokens != n:
        where = f" in {len(holding)} turns" if target.collapse_per_turn and sum(counts) > 1 else ""
        return [("image_token_count", f"{sum(counts)} {IMAGE_TOKEN} token{'s' if sum(counts) > 1 else ''}{where} "
                                      f"for {n} image{'s' if n != 1 else ''}")]
    if target.token_at_start and n == 1:
        return _position(turns, counts, holding[0])
    return []


def _position(turns: list[Turn], counts: list[int], at: int) -> list[Problem]:
    """One image, its token(s) in turn `at`: expected once, at the start of the first human turn."""
    first = first_user(turns)
    if at == first and counts[at] == 1 and turns[at].value.startswith(IMAGE_TOKEN):
        return []
    if at == first and counts[at] > 1:
        return [("image_position", f"{counts[at]} {IMAGE_TOKEN} tokens in turn {at}: one is kept, at its start")]
    if at == first:
        return [("image_position", f"{IMAGE_TOKEN} stands inside turn {at}, not at its start: the loader moves it")]
    return [("image_position", f"{IMAGE_TOKEN} is in turn {at} (from {turns[at].written!r}), not in the first "
                               f"human turn ({first}): the turns before it are trained without the image")]


def too_long_problem(tokens: int, text_tokens: int, image_tokens: int, limit: int, mark: str) -> list[Problem]:
    """A sample over the --max-tokens budget (`mark` is "~" for an estimate)."""
    if tokens <= limit:
        return []
    images = f" + {image_tokens} for images" if image_tokens else ""
    return [("too_long", f"{mark}{tokens} tokens ({text_tokens} text{images}) > --max-tokens {limit}")]
