"""The kinds of value a config key takes (config/schema.py declares each key's): a number in a range, true or
false, text, a list, a section, or a value its owner checks. Each kind describes itself for --help and the docs,
reads a value given on the command line or in a YAML file (``read``: its type checked, a number given for text
becomes text), and checks the composed value (``check``); each refusal is one line
naming the key and what it takes."""

import math
from dataclasses import dataclass

from clex.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Kind:
    nullable: bool = False
    doc: str = ""  # what the key means, where no YAML file has a comment beside it

    def what(self) -> str:  # what a value of this kind is, without "or null"
        raise NotImplementedError

    def describe(self) -> str:
        return self.what() + (" or null" if self.nullable else "")

    def refuse(self, key: str, value):
        shown = "null" if value is None else repr(value)
        raise ConfigError(f"{key} must be {self.describe()}, got {shown}")

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def read(self, key: str, value):
        """A value as given (command line, YAML), as this kind holds it."""
        self.check(key, value)
        return value

    def check(self, key: str, value):
        if value is None:
            if not self.nullable:
                self.refuse(key, value)
        elif not self.accepts(value):
            self.refuse(key, value)


@dataclass(frozen=True)
class Number(Kind):
    """An integer or a float in [low, high] (``open_low``: > low). ``other``: a non-numeric value the key also
    takes (trainer.devices: "auto" or a list), checked by its owner."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    other: bool = False

    def what(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        return kind

    def is_number(self, value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def accepts(self, value) -> bool:
        if not self.is_number(value):
            return self.other
        if self.kind is int and not isinstance(value, int):
            return False
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        return math.isfinite(value) and not too_low and not (self.high is not None and value > self.high)

    def read(self, key: str, value):
        """Its type only (the range is checked on the composed config: a value may come from another key)."""
        if value is None or not self.is_number(value):
            self.check(key, value)
        elif self.kind is int and not isinstance(value, int):
            self.refuse(key, value)
        return value


@dataclass(frozen=True)
class Flag(Kind):
    def what(self) -> str:
        return "true or false"

    def accepts(self, value) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Text(Kind):
    def what(self) -> str:
        return "text"

    def accepts(self, value) -> bool:
        return isinstance(value, str)

    def read(self, key: str, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a name that reads as a number (trainer.precision=32)
        return super().read(key, value)


@dataclass(frozen=True)
class Items(Kind):
    """A list; ``example`` shows one in the refusal."""

    example: str = "[a,b]"

    def what(self) -> str:
        return f"a list like {self.example}"

    def accepts(self, value) -> bool:
        return isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig"


@dataclass(frozen=True)
class Section(Kind):
    """A map of keys (a section its owner reads)."""

    def what(self) -> str:
        return "a section {key: value, ...}"

    def accepts(self, value) -> bool:
        return isinstance(value, dict) or type(value).__name__ == "DictConfig"


@dataclass(frozen=True)
class Either(Kind):
    """One of several kinds (eval.key_tokens: a model folder or a section), each checked by its owner."""

    shape: str = ""

    def what(self) -> str:
        return self.shape

    def check(self, key: str, value):
        pass  # its owner's


def at_least(low, kind=int, nullable=False):
    return Number(kind=kind, low=low, nullable=nullable)


def above(low, nullable=False):
    return Number(kind=float, low=low, open_low=True, nullable=nullable)
