"""What an `avatars` caption pins down: for each attribute it mentions, the values for which the builder would
write the same caption (both "angry" eyebrows read "angry eyebrows", so either is right). A caption mentions
only some attributes (one template says nothing of glasses; sunglasses hide the eyes; "default" eyes are not
described). `ldmkit eval` and the evaluation inside UNet training score images on these.

    mentioned_values(row_labels, caption)   # {"hair_color": frozenset({"red"}), "top": ..., ...}; {} if not an avatar's
"""

from __future__ import annotations

from collections.abc import Mapping

from ldmkit.data.builtin.avatars import (ACCESSORIES, EYEBROWS, EYES, FACIAL_HAIR, avatar_values, avatars_value_sets,
                                         captions_for, is_avatars_row)

SILENT_EXCEPTIONS = {"accessory": "no glasses"}
"""A value with an empty phrase is not mentioned, unless the caption says this instead (no accessory)."""


def mentioned_values(labels: Mapping[str, str], caption: str) -> dict[str, frozenset[str]]:
    """Attribute -> the values `caption` allows, for the attributes it mentions; {} when labels are not an
    avatar's or the caption is not one the builder writes for them."""
    if not is_avatars_row(labels):
        return {}
    captions = captions_for(dict(labels))
    if caption not in captions:
        return {}
    phrases = {"eyes": EYES, "eyebrows": EYEBROWS, "facial_hair": FACIAL_HAIR, "accessory": ACCESSORIES}
    everything = avatar_values()
    out = {}
    for column, allowed in avatars_value_sets(labels, captions.index(caption)).items():
        silent = column in phrases and phrases[column][labels[column]] == ""
        if silent and SILENT_EXCEPTIONS.get(column, "\0") not in caption:
            continue
        if len(allowed) < len(everything[column]):
            out[column] = allowed
    return out
