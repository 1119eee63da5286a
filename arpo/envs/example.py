"""One prompt of a task or dataset, in the shape every loader produces and every sampler consumes."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Example:
    """A question with its accepted answers.

    uid:          stable identifier (``"<source>:<split>:<index>"`` for embedded tasks, ``"<file>:<row>"`` for files)
    messages:     chat messages ``[{"role": ..., "content": ...}, ...]`` without the system prompt unless the
                  dataset supplied one (a leading ``system`` message is kept as it is)
    ground_truth: accepted answers (one or more strings); rewards compare the model's answer to each
    data_source:  task / dataset name; ``data.reward: auto`` picks the reward function from it
    extra:        anything else the row carried (never used for the reward)
    """

    uid: str
    messages: tuple[dict[str, str], ...]
    ground_truth: tuple[str, ...]
    data_source: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message's text."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")
