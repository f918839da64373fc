"""The error raised for model output that does not follow the V4 completion format."""

from __future__ import annotations


class DSMLParseError(ValueError):
    """Malformed completion. The message is written for the model: it names the problem and shows the
    expected form, so an agent loop can feed it back verbatim. `position` is the character offset in the
    completion where the problem was found (None when it concerns the end of the text)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position
