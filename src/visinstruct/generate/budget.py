"""The spending cap of a run: `--max-cost` (in the price unit) and `--max-tokens-total`.

What counts is everything the ledger has spent (every run that wrote to it, at the full price: the ledger does
not record which answers came at a batch discount), plus each request in flight at its most (prompt tokens as
counted — estimated unless --tokenizer — plus max_tokens). A request is sent only if that sum stays within the
cap, so the run stops before it could exceed it, finishes what is in flight, and a re-run with a higher cap
continues. The cap holds as far as the prompt count does: an estimate can be low (box coordinates tokenize
worse than prose), and a timed-out attempt a server bills anyway is counted as nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def price(prompt: float, completion: float, price_in: float, price_out: float) -> float:
    """What tokens cost at prices per million prompt / completion tokens."""
    return (prompt * price_in + completion * price_out) / 1e6


@dataclass
class Budget:
    """Tokens and cost spent and reserved against the caps."""

    max_cost: float | None
    max_tokens: int | None
    price_in: float = 0.0  # per million prompt tokens
    price_out: float = 0.0  # per million completion tokens
    discount: float = 1.0  # the share of the price paid (batch mode: 0.5)
    spent_tokens: int = 0
    spent_cost: float = 0.0
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    refused: int = 0  # requests not sent because of the cap

    @classmethod
    def of(cls, opts: Any, ledgers: list[Any], discount: float = 1.0) -> Budget | None:
        """The run's budget (None when no cap is set), with what the ledgers already spent."""
        if opts.max_cost is None and opts.max_tokens_total is None:
            return None
        budget = cls(opts.max_cost, opts.max_tokens_total, opts.price_in or 0.0, opts.price_out or 0.0, discount)
        for ledger in ledgers:  # earlier spending at the full price: the ledger does not say which was batched
            prompt, completion = ledger.spent_tokens()
            budget.spent_tokens += prompt + completion
            budget.spent_cost += budget.cost(prompt, completion) / discount if discount else 0.0
        return budget

    def cost(self, prompt: float, completion: float) -> float:
        return price(prompt, completion, self.price_in, self.price_out) * self.discount

    def admit(self, prompt: int, completion: int) -> bool:
        """Reserve a request at its most; False (nothing reserved) when it could cross a cap."""
        tokens, cost = prompt + completion, self.cost(prompt, completion)
        if self.max_tokens is not None and self.spent_tokens + self.reserved_tokens + tokens > self.max_tokens:
            self.refused += 1
            return False
        if self.max_cost is not None and self.spent_cost + self.reserved_cost + cost > self.max_cost:
            self.refused += 1
            return False
        self.reserved_tokens += tokens
        self.reserved_cost += cost
        return True

    def settle(self, prompt: int, completion: int, used_prompt: int, used_completion: int) -> None:
        """Replace a reservation by what the request really used (0, 0 when it failed)."""
        self.reserved_tokens -= prompt + completion
        self.reserved_cost -= self.cost(prompt, completion)
        self.spent_tokens += used_prompt + used_completion
        self.spent_cost += self.cost(used_prompt, used_completion)

    def note(self) -> str | None:
        """Why units were left unsent (None when the cap was never reached)."""
        if not self.refused:
            return None
        caps = []
        if self.max_cost is not None:
            caps.append(f"--max-cost {self.max_cost:g} (spent {self.spent_cost:,.4f})")
        if self.max_tokens is not None:
            caps.append(f"--max-tokens-total {self.max_tokens:,} (spent {self.spent_tokens:,})")
        return (f"not sent: the next request could exceed {' / '.join(caps)}; re-run with a higher cap to "
                "continue")
