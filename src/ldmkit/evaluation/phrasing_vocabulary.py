"""What a free-phrasing gap is made of: the words a model was trained on, or new words (issue 17).

    gap = vocabulary_gap(Path("eval-free"), Path("eval-templates"))   # encoder: the evaluated model's
    gap["groups"]["trained word"]        # {"n", "free", "templates", "difference"} over (image, attribute) pairs
    gap["words"]["skin: ebony skin"]     # {"status", "nearest", "similarity"}

Every attribute a free prompt names is named by one phrase of the eval word pool
(`ldmkit.data.builtin.avatar_phrasings`). That phrase is a *trained word* when a model trained with the builder's
phrasings has seen it for the same attribute: it is in the shared or the train pool, or it is the builder's own
caption phrase (avatars.TEMPLATES' words), or the model's last training data drew its phrasings from every word
(`data.builtin_phrasing_words: all`: then every eval word is trained). Otherwise it is *new* (as every word of
the "new" pool always is), and the model can only draw it through its frozen text encoder: the phrase is embedded
in a carrier sentence with the model's text encoder (mean of its token states), and if the nearest trained phrase
of the same attribute allows one of the values the new phrase means, the encoder *points to a right trained
phrase*; else to a wrong one. Each group's accuracy is set beside the control's (the
same attribute of the same avatar in template words, same seed), paired, with bootstrap intervals.

This separates what sentence shapes, subjects, word order and attribute subsets cost (trained words) from what
new words cost, and among new words what the text encoder maps wrongly before the UNet sees anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ldmkit.data.builtin import avatar_phrasings as words
from ldmkit.data.builtin import avatars
from ldmkit.data.builtin.avatar_phrasings import check_phrasing_words
from ldmkit.errors import UsageError

GROUPS = ("trained word", "new word, encoder points to a right trained phrase",
          "new word, encoder points to a wrong trained phrase")
CARRIER = "a person with {}"
"""The sentence a phrase is embedded in: the encoder reads words in context, as the UNet gets them."""

WORD_TABLES = {"top": (words.HAIR_STYLE, words.HAT), "hair_color": (words.HAIR_COLOR,),
               "hat_color": (words.CLOTH_COLOR,), "clothing": (words.CLOTHES,),
               "clothing_color": (words.CLOTH_COLOR,), "skin": (words.SKIN,), "mouth": (words.MOUTH,),
               "eyes": (words.EYES,), "facial_hair": (words.FACIAL_HAIR,), "accessory": (words.ACCESSORY,),
               "background": (words.BACKGROUND,)}
"""Label column -> the word tables that name it (a hat is a `top` value)."""
CAPTION_WORDS = {"top": {**avatars.HAIR, **avatars.HATS}, "hair_color": avatars.HAIR_COLORS,
                 "hat_color": avatars.CLOTHING_COLORS, "clothing": avatars.CLOTHES,
                 "clothing_color": avatars.CLOTHING_COLORS,
                 "skin": {value: f"{word} skin" for value, word in avatars.SKINS.items()},
                 "mouth": avatars.MOUTHS, "eyes": avatars.EYES, "facial_hair": avatars.FACIAL_HAIR,
                 "accessory": avatars.ACCESSORIES, "background": {v: v for v in avatars.BACKGROUNDS}}
"""Label column -> {value: the phrase the builder's template captions use for it}."""

Encode = Callable[[list[str]], np.ndarray]
"""Texts -> (N, D) sentence vectors."""


def normalise(phrase: str) -> str:
    """The phrase without its colour slot, lower-case, single-spaced: "a {c}hat" and "a {c} hat" are "a hat"."""
    return re.sub(r"\s+", " ", phrase.replace("{c}", " ")).strip().lower()


def trained_phrases(column: str, words: str = "train") -> dict[str, frozenset[str]]:
    """{normalised phrase: the values it allows} a model trained on the builder's captions and phrasings of
    `words` ("train": the train pool's; "all": both pools') has seen naming `column`."""
    check_phrasing_words(words)
    out: dict[str, set[str]] = {}
    for table in WORD_TABLES[column]:
        for part in ("both", "train", "eval") if words == "all" else ("both", "train"):
            for phrase, values in table.get(part, {}).items():
                out.setdefault(normalise(phrase), set()).update(values.split(", "))
    for value, phrase in CAPTION_WORDS[column].items():
        if phrase:
            out.setdefault(normalise(phrase), set()).add(value)
    return {phrase: frozenset(values) for phrase, values in out.items()}


def eval_values(column: str, phrase: str) -> frozenset[str]:
    """The values an eval-pool, new-pool (or shared) phrase of `column` allows."""
    for table in WORD_TABLES[column]:
        for part in ("both", "eval", "new"):
            if phrase in table.get(part, {}):
                return frozenset(table[part][phrase].split(", "))
    raise KeyError(f"{phrase!r} is not an eval phrase of {column}")


def word_statuses(used: set[tuple[str, str]], encode: Encode, words: str = "train") -> dict[tuple[str, str], dict]:
    """{(column, phrase): {"status": one of GROUPS, "nearest", "similarity"}} for the eval phrases `used` of a
    model trained on phrasings of `words`; a new phrase's nearest trained phrase (cosine of `encode`d carrier
    sentences) is named with its similarity."""
    out = {}
    trained_by_column = {column: trained_phrases(column, words) for column in {c for c, _ in used}}
    new = sorted(key for key in used if normalise(key[1]) not in trained_by_column[key[0]])
    for column, phrase in used:
        if (column, phrase) not in new:
            out[(column, phrase)] = {"status": GROUPS[0], "nearest": normalise(phrase), "similarity": 1.0}
    for column in sorted({c for c, _ in new}):
        trained = trained_by_column[column]
        names = sorted(trained)
        mine = [p for c, p in new if c == column]
        vectors = _unit(encode([CARRIER.format(normalise(p)) for p in mine + names]))
        sims = vectors[:len(mine)] @ vectors[len(mine):].T
        for row, phrase in zip(sims, mine):
            best = int(np.argmax(row))
            right = bool(trained[names[best]] & eval_values(column, phrase))
            out[(column, phrase)] = {"status": GROUPS[1] if right else GROUPS[2], "nearest": names[best],
                                     "similarity": float(row[best])}
    return out


def vocabulary_gap(free_dir: Path, control_dir: Path, *, condition: str | None = None, encode: Encode | None = None,
                   words: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The paired free-vs-template accuracy of a free-avatars run and its control, grouped by GROUPS (see the
    module docstring); `encode` defaults to the evaluated model's text encoder, `words` (which phrasing words
    it was trained on, "train" or "all") to what its ldmkit.json records."""
    from ldmkit.evaluation.phrasing_gap import _ci, _read, check_free_pair, paired_hits

    runs = [_read(Path(d))["settings"] for d in (free_dir, control_dir)]
    check_free_pair([settings["prompt_set"] for settings in runs])
    paired = paired_hits(free_dir, control_dir, condition=condition, may_differ=("prompt_set",))
    pairs = []  # (column, phrase, free hit, control hit)
    for i in paired.scored:
        named = paired.asked[paired.order[i]].words
        pairs += [(c, named[c], float(hit), float(paired.hits[1][i][c])) for c, hit in paired.hits[0][i].items()]
    if encode is None:
        encode = model_encoder(Path(runs[0]["model"]))
    if words is None:
        words = taught_words(Path(runs[0]["model"]))
    statuses = word_statuses({(c, p) for c, p, _, _ in pairs}, encode, words)
    ci = _ci(n_boot, seed)
    groups = {}
    for group in GROUPS:
        hits = np.array([(f, t) for c, p, f, t in pairs if statuses[(c, p)]["status"] == group]).reshape(-1, 2)
        if len(hits) > 1:
            groups[group] = {"n": len(hits), "free": ci(hits[:, 0]), "templates": ci(hits[:, 1]),
                             "difference": ci(hits[:, 0] - hits[:, 1])}
        else:
            groups[group] = {"n": len(hits)}
    counts: dict[tuple[str, str], list[float]] = {}
    for c, p, f, t in pairs:
        counts.setdefault((c, p), []).append(f)
    return {"condition": paired.condition, "images": len(paired.scored), "phrasing_words": words, "groups": groups,
            "words": {f"{c}: {p}": {**statuses[(c, p)], "n": len(counts[(c, p)]),
                                   "free": float(np.mean(counts[(c, p)]))} for c, p in sorted(counts)}}


def taught_words(model: Path) -> str:
    """The phrasing words ("train" or "all") of the model folder's last training data, from its ldmkit.json
    ("train" when it records none: a model trained before the option, or on other data)."""
    from ldmkit.models.folder import recorded

    return recorded(model, "dataset", "builtin", "phrasing_words") or "train"


def model_encoder(model: Path) -> Encode:
    """The model folder's text encoder as an Encode: the mean of each text's token states (padding left out)."""
    import torch

    from ldmkit.models.folder import load_text_encoder

    text = load_text_encoder(model)

    def encode(texts: list[str]) -> np.ndarray:
        states = text.encode(texts).float()
        lengths = [len(text.tokenizer(text.expand(t), truncation=True, max_length=text.max_length).input_ids)
                   for t in texts]
        mask = torch.zeros(states.shape[:2])
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        return ((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
    return encode


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
