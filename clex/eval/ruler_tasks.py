"""RULER-style synthetic tasks (Hsieh et al. 2024, arXiv 2404.06654) on haystacks cut from the test split.

Six tasks: one needle (``niah_single``), a needle among distractor keys (``niah_multikey``), every value
of one key (``niah_multivalue``), the values of several keys asked at once (``niah_multiquery``), the
variables of a chain of assignments (``variable_tracking``) and the most common words of a list
(``common_words``). A prompt has exactly the stated number of tokens: the task's pieces (needles,
assignments) are spliced into a seeded window of test-split tokens at their depths, then the question
follows on its own line; pieces start at a word of the filler (a sentence start where one is within 5%
of the filler). A sample is correct when every expected string appears in the answer's first line as a
whole word, in any case (RULER's string match, all or nothing);
``score`` keeps RULER's partial credit (the fraction found). Samples depend on the seed, task, length,
depth and trial only, so every model sees the same prompts.
"""

import functools
import re
from dataclasses import dataclass, field

import torch

from clex.errors import ConfigError

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "variable_tracking", "common_words")
DEPTH_TASKS = TASKS[:4]  # the asked needle sits at a stated depth; the other two spread over the whole context
KEYS = (
    "apple",
    "badger",
    "cactus",
    "dolphin",
    "ember",
    "falcon",
    "glacier",
    "harbor",
    "iris",
    "jasmine",
    "kettle",
    "lantern",
    "meadow",
    "nectar",
    "orchid",
    "pepper",
    "quartz",
    "raven",
    "saffron",
    "tulip",
    "umber",
    "violet",
    "walnut",
    "yarrow",
    "zephyr",
    "anchor",
    "bramble",
    "cobalt",
    "dune",
    "ferret",
)
SNAP = 0.05  # a piece moves by at most this fraction of the filler to start at a word (and a sentence if one is near)
NEEDLE = " The magic number for {key} is {value}."  # spliced in before a word of the filler
VARIABLE = " VAR {name} = {value}."


class Skipped(Exception):
    """A cell that cannot be built (its fixed parts exceed the length, or too few distinct words)."""


@dataclass
class Spec:
    pieces: list  # (depth, text) spliced into the haystack
    question: str
    expected: list  # strings the answer must contain
    answer: str  # the reference answer; its token count is how many tokens are decoded
    fill: object = None  # room -> token ids replacing the haystack (common_words), or None


@dataclass
class Sample:
    prompt: torch.Tensor  # exactly ``length`` token ids
    expected: list
    answer_tokens: int
    spans: list = field(default_factory=list)  # [start, end) of each piece in the prompt, in ``pieces`` order


def _values(rng, count: int, digits: int) -> list[str]:
    return [str(v) for v in rng.sample(range(10 ** (digits - 1), 10**digits), count)]


def _spread(rng, depth: float, count: int) -> list[float]:
    """The asked piece at ``depth``, the others at seeded uniform depths."""
    return [depth] + [rng.random() for _ in range(count - 1)]


def niah_single(rng, depth, opts, haystack) -> Spec:
    key, [value] = rng.choice(KEYS), _values(rng, 1, opts.digits)
    return Spec(
        [(depth, NEEDLE.format(key=key, value=value))],
        f"\nWhat is the magic number for {key}? The magic number for {key} is",
        [value],
        f" {value}",
    )


def niah_multikey(rng, depth, opts, haystack) -> Spec:
    keys, values = rng.sample(KEYS, opts.needles), _values(rng, opts.needles, opts.digits)
    pieces = [
        (d, NEEDLE.format(key=k, value=v))
        for d, k, v in zip(_spread(rng, depth, opts.needles), keys, values, strict=False)
    ]
    return Spec(
        pieces,
        f"\nWhat is the magic number for {keys[0]}? The magic number for {keys[0]} is",
        [values[0]],
        f" {values[0]}",
    )


def niah_multivalue(rng, depth, opts, haystack) -> Spec:
    key, values = rng.choice(KEYS), _values(rng, opts.needles, opts.digits)
    pieces = [
        (d, NEEDLE.format(key=key, value=v)) for d, v in zip(_spread(rng, depth, opts.needles), values, strict=False)
    ]
    return Spec(
        pieces,
        f"\nWhat are all the magic numbers for {key}? The magic numbers for {key} are",
        values,
        " " + ", ".join(values),
    )


def niah_multiquery(rng, depth, opts, haystack) -> Spec:
    keys, values = rng.sample(KEYS, opts.queries), _values(rng, opts.queries, opts.digits)
    pieces = [
        (d, NEEDLE.format(key=k, value=v))
        for d, k, v in zip(_spread(rng, depth, opts.queries), keys, values, strict=False)
    ]
    asked = ", ".join(keys)
    return Spec(
        pieces,
        f"\nWhat are the magic numbers for {asked}? The magic numbers for {asked} are",
        values,
        " " + ", ".join(values),
    )


def variable_tracking(rng, depth, opts, haystack) -> Spec:
    names = rng.sample(
        sorted({"".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=4)) for _ in range(64)}), opts.hops + 1
    )
    [value] = _values(rng, 1, opts.digits)
    statements = [VARIABLE.format(name=names[0], value=value)]
    statements += [VARIABLE.format(name=name, value=prev) for prev, name in zip(names, names[1:], strict=False)]
    depths = sorted(rng.random() for _ in statements)  # in order, so the chain reads forwards
    return Spec(
        list(zip(depths, statements, strict=False)),
        f"\nWhich variables hold the value {value}? They are",
        names,
        " " + " ".join(names),
    )


def common_words(rng, depth, opts, haystack) -> Spec:
    if len(haystack.words) <= opts.common:
        raise Skipped(
            f"the test split has {len(haystack.words)} distinct words, common_words needs more than "
            f"eval.ruler.common = {opts.common}"
        )
    words = rng.sample(haystack.words, len(haystack.words))
    common, rare = words[: opts.common], words[opts.common :]

    def fill(room: int) -> list[int]:
        """The common words ``common_frequency`` times each, the others at most one time fewer, shuffled;
        the tokens left over (less than one word) are haystack tokens in front."""

        @functools.cache  # each word's tokens, encoded once
        def tokens(word):
            return haystack.encode(f" {word}")

        listed = [w for w in common for _ in range(opts.common_frequency)]
        budget = room - sum(len(tokens(w)) for w in listed)
        if budget < 0:
            raise Skipped(
                f"{opts.common} common words x {opts.common_frequency} need {room - budget} tokens, the room is {room}"
            )
        for _ in range(opts.common_frequency - 1):
            for word in rare:
                if len(tokens(word)) <= budget:
                    listed.append(word)
                    budget -= len(tokens(word))
        if budget > max(len(tokens(w)) for w in rare[:50] or common):
            raise Skipped(f"the test split's {len(haystack.words)} distinct words cannot fill {room} tokens")
        rng.shuffle(listed)
        return haystack.window(rng, budget) + [i for w in listed for i in tokens(w)]

    return Spec(
        [],
        f"\nWhat are the {opts.common} most common words in the list above? They are",
        common,
        " " + " ".join(common),
        fill,
    )


BUILDERS = {name: globals()[name] for name in TASKS}


class Haystack:
    """Filler: the test split's documents as one token stream (in order, until enough tokens), and
    their distinct words for ``common_words``."""

    def __init__(self, tokenizer, documents, tokens_needed: int):
        self.tokenizer, stream, words = tokenizer, [], {}
        for _, text in documents:
            stream += [int(i) for i in tokenizer.encode(text)] + [int(tokenizer.separator)]
            words.update(dict.fromkeys(w.lower() for w in re.findall(r"\b[A-Za-z]{4,10}\b", text)))
            if len(stream) >= tokens_needed:
                break
        if not stream:
            raise ConfigError("eval=ruler: the test split is empty; nothing to cut haystacks from")
        self.stream = stream
        self.words = sorted(set(words) - set(KEYS))
        self.texts = {}  # token id -> its text, to find word and sentence starts

    def text(self, token: int) -> str:
        if token not in self.texts:
            self.texts[token] = self.tokenizer.decode([token])
        return self.texts[token]

    def snap(self, filler: list[int], cut: int, radius: int) -> int:
        """The insertion point nearest ``cut`` (within ``radius`` tokens) before a word, preferring one after a
        sentence or line end, so a piece never splits a word; ``cut`` itself if there is none."""

        def rank(i):
            if i in (0, len(filler)):
                return 0
            following, previous = self.text(filler[i]), self.text(filler[i - 1])
            if not following[:1].isspace():
                return None
            return 0 if following.startswith("\n") or previous.rstrip(" ").endswith((".", "\n")) else 1

        candidates = [
            (r, abs(i - cut), i)
            for i in range(max(0, cut - radius), min(len(filler), cut + radius) + 1)
            if (r := rank(i)) is not None
        ]
        return min(candidates)[2] if candidates else cut

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text)]

    def window(self, rng, size: int) -> list[int]:
        """``size`` consecutive tokens at a seeded offset, from a word start if one is within 64 tokens
        (the stream repeated when it is shorter)."""
        repeats = -(-(size + 1) // len(self.stream))
        stream = self.stream * repeats if repeats > 1 else self.stream
        start, last = rng.randrange(0, len(stream) - size + 1), len(stream) - size
        # start at a word: a piece put at the very start then precedes a whole word
        start = next((i for i in range(start, min(start + 64, last + 1)) if self.text(stream[i])[:1].isspace()), start)
        return stream[start : start + size]


def make_sample(task: str, haystack: Haystack, length: int, depth, rng, opts) -> Sample:
    spec = BUILDERS[task](rng, depth, opts, haystack)
    pieces = [(d, haystack.encode(text)) for d, text in spec.pieces]
    question, prefix = haystack.encode(spec.question), list(haystack.tokenizer.prefix)
    room = length - len(prefix) - sum(len(ids) for _, ids in pieces) - len(question)
    if room < 0:
        raise Skipped(f"the task's fixed parts need {length - room} tokens, more than the length {length}")
    filler = spec.fill(room) if spec.fill else haystack.window(rng, room)
    ids, spans, last = list(prefix), [None] * len(pieces), 0  # a checkpoint's BOS first
    radius = max(1, round(SNAP * room))
    for index in sorted(range(len(pieces)), key=lambda i: pieces[i][0]):
        cut = max(last, haystack.snap(filler, round(pieces[index][0] * room), radius))
        ids += filler[last:cut]
        last = cut
        spans[index] = (len(ids), len(ids) + len(pieces[index][1]))
        ids += pieces[index][1]
    ids += filler[last:] + question
    assert len(ids) == length, (len(ids), length)
    return Sample(torch.tensor(ids, dtype=torch.long), spec.expected, 2 * len(haystack.encode(spec.answer)) + 8, spans)


def matches(answer: str, expected: list[str]) -> list[bool]:
    """Whether each expected string appears in the answer's first line as a whole word, in any case."""
    first_line = answer.strip().split("\n")[0]
    return [re.search(rf"(?<!\w){re.escape(e)}(?!\w)", first_line, re.IGNORECASE) is not None for e in expected]
