"""Prompt sets of `ldmkit eval`: the dataset's captions, or free phrasings of its held-out avatars (issue 17).

    prompts, asked = prompt_set("free-avatars", samples)            # one prompt per held-out avatar
    prompts, asked = prompt_set("free-avatars-templates", samples)  # the same attributes, training wording

"free-avatars" asks for 1-4 attributes of each held-out avatar in words people use (other sentence shapes,
word orders and synonyms than the training captions; `ldmkit.data.builtin.avatar_phrasings`, eval pool).
"free-avatars-templates" is its control: for the same avatar, the training caption (template 1 or 2 of the
builder) that names every attribute the free prompt names, scored on exactly those attributes with the
same acceptable values. Generated with the same seeds, the two differ only in wording, so their accuracy
gap is what free phrasing costs. Both are drawn from the labels alone: the same avatar gets the same
prompts in any dataset folder.

"free-avatars-new-words" / "free-avatars-new-words-templates" are the same for colour words no caption option
ever teaches (the phrasings' "new" pool: hair and clothing colours only, controlled by template 1, which names
both): how a model draws words it has never seen, now that `data.builtin_phrasing_words: all` can teach every
eval-pool word.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ldmkit.errors import UsageError

PROMPT_SETS = ("captions", "free-avatars", "free-avatars-templates", "free-avatars-new-words",
               "free-avatars-new-words-templates")
FREE_SETS = {"free-avatars": "eval", "free-avatars-new-words": "new"}
"""Free prompt set -> the phrasing pool it draws from; its control is the same name + "-templates"."""
CONTROL_TEMPLATES = (1, 2)
"""Builder templates a control caption may come from: together they name every attribute a free prompt can
(template 1: skin, hair, clothing, mouth, background; template 2: skin, hair, glasses, beard, eyes, mouth)."""
NEVER_NAMED = frozenset({"eyebrows"})
"""Columns left out of free prompts: the shipped attribute classifier reads eyebrows at 80% (< 95%)."""


@dataclass(frozen=True)
class FreePrompt:
    """A free prompt for one avatar and its training-style control."""

    text: str
    """The free phrasing."""
    asked: dict[str, frozenset[str]]
    """Column -> acceptable values: what both prompts are scored on."""
    template_caption: str
    """The builder's caption (one of its templates) that names every column of `asked`."""
    words: dict[str, str]
    """Column -> the word-table phrase naming it in `text` (for per-synonym accuracy)."""


def free_set(prompt_set: str) -> str:
    """The free prompt set a set of PROMPT_SETS belongs to (a control: its free set)."""
    name = prompt_set.removesuffix("-templates")
    if name not in FREE_SETS:
        raise UsageError(f"{prompt_set!r} is not a free prompt set; choose one of {', '.join(PROMPT_SETS[1:])}")
    return name


def free_prompt(labels: Mapping[str, str], pool: str = "eval") -> FreePrompt:
    """The free prompt of an avatars row from phrasing pool `pool` ("eval" or "new"), drawn from a generator
    seeded by its label values."""
    from ldmkit.data.builtin.avatar_phrasings import free_phrasing
    from ldmkit.data.builtin.avatars import avatar_values, captions_for
    from ldmkit.data.builtin.avatar_mentions import mentioned_values

    key = "|".join(labels[column] for column in avatar_values())
    rng = random.Random(f"free-avatars-{key}" if pool == "eval" else f"free-avatars-{pool}-{key}")
    template = rng.choice(CONTROL_TEMPLATES) if pool == "eval" else 1
    caption = captions_for(dict(labels))[template]
    columns = set(mentioned_values(labels, caption)) - NEVER_NAMED
    phrasing = free_phrasing(labels, rng, pool=pool, columns=columns)
    return FreePrompt(phrasing.text, phrasing.asked, caption, phrasing.words)


def prompt_set(name: str, labels: Sequence[Mapping[str, str]]) -> tuple[list[str], list[dict[str, frozenset[str]]]]:
    """(prompts, asked) of a free prompt set for these avatars rows, one prompt per row."""
    from ldmkit.data.builtin.avatars import is_avatars_row

    if name not in PROMPT_SETS[1:]:
        raise UsageError(f"--prompt-set {name!r}: choose one of {', '.join(PROMPT_SETS)}")
    bad = [i for i, row in enumerate(labels) if not is_avatars_row(row)]
    if bad:
        raise UsageError(f"--prompt-set {name} needs avatars rows; row {bad[0]} is not one "
                         "(evaluate a dataset built with `avatars`, e.g. --where source=avatars)")
    prompts = [free_prompt(row, FREE_SETS[free_set(name)]) for row in labels]
    texts = [p.text if name in FREE_SETS else p.template_caption for p in prompts]
    return texts, [dict(p.asked) for p in prompts]
