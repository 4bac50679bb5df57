"""Choosing and building the teacher: the one place where teacher defaults (concurrency, tokens) are settled."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.errors import UserError
from .base import Teacher

HTTP_CONCURRENCY = 16
HTTP_MAX_TOKENS = 1024
HTTP_TEMPERATURE = 0.7
EMBEDDED_MAX_TOKENS = 200


@dataclass
class TeacherConfig:
    """What the user asked for; `settle()` checks it and fills the defaults. Picklable (sent to Ray actors)."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0
    concurrency: int | None = None
    batch_size: int = 8
    api_key: str | None = field(default=None, repr=False)  # read from api_key_env; never logged or written
    first_byte_timeout: float = 300.0  # streamed: seconds to the first token (queue + prefill)
    stream: bool = True  # HTTP: ask for a streamed reply (--no-stream: one plain JSON body)

    @property
    def embedded(self) -> bool:
        return not self.base_url

    def settle(self, installed: bool = True) -> TeacherConfig:
        """Check the flags, read the key from its environment variable, fill model and concurrency.
        `installed=False` (a dry run) does not require the embedded extra: nothing will be loaded."""
        if self.embedded:
            if self.model or self.api_key_env:
                raise UserError("--model and --api-key-env need --base-url (without them the embedded teacher runs)")
            from .embedded import EMBEDDED_MODEL, require_embedded

            if installed:
                require_embedded()
            self.model = EMBEDDED_MODEL
            self.concurrency = self.concurrency or self.batch_size * 4
            return self
        if not self.model:
            raise UserError("--base-url needs --model")
        if self.api_key_env:
            self.api_key = os.environ.get(self.api_key_env)
            if not self.api_key:
                raise UserError(f"--api-key-env {self.api_key_env}: that environment variable is not set")
        self.concurrency = self.concurrency or HTTP_CONCURRENCY
        return self

    @property
    def default_max_tokens(self) -> int:
        return EMBEDDED_MAX_TOKENS if self.embedded else HTTP_MAX_TOKENS

    @property
    def default_temperature(self) -> float | None:
        return None if self.embedded else HTTP_TEMPERATURE  # embedded: greedy

    def build(self) -> Teacher:
        """A new teacher (call inside the event loop's process: each worker builds its own)."""
        if self.embedded:
            from .embedded import EmbeddedTeacher

            return EmbeddedTeacher(batch_size=self.batch_size)
        from .http import HTTPTeacher

        key = self.api_key
        if self.api_key_env and not key:  # in a worker: the key never travels, it is read where it is used
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(f"--api-key-env {self.api_key_env}: not set in this worker's environment "
                                "(on a cluster, set it on every node)")
        return HTTPTeacher(self.base_url, self.model, key, self.timeout, self.concurrency,
                           self.first_byte_timeout, self.stream)

    def __getstate__(self) -> dict:
        """Pickled for a worker or a Ray actor without the key itself (the worker reads its variable)."""
        return {**self.__dict__, "api_key": None}
