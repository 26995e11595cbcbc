"""The `data` section of every trainer's recipe: where the images come from, how they are framed and split.

    data = DataSection(builtin="emoji+avatars", builtin_n={"avatars": 2000}, image_size=64)
    data.trim        # TrimSection: resolved here (no border trim for the built-in shapes, a path's too)

Read from YAML by `ldmkit.config.load_recipe` as part of a recipe (ldmkit.training.recipes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ldmkit.config.checks import check_choice, check_float, check_int
from ldmkit.config.training import TrimSection
from ldmkit.errors import UsageError

BUILTIN_DATASETS = ("shapes", "emoji", "avatars")


@dataclass(frozen=True)
class DataSection:
    """Where the training images come from and how they are split."""

    path: str | None = None
    """Dataset folder (any format CaptionDataset.open reads); None: RUN_DIR/dataset (needs `builtin`)."""
    builtin: str | None = None
    """Build this built-in dataset (shapes, emoji, avatars, or a mixture like emoji+avatars) at `path` (or
    RUN_DIR/dataset) when that folder is missing or empty; an existing folder must be that same build. A
    `data.path` override without a `data.builtin` one drops the recipe's builtin (training.run_data)."""
    builtin_n: int | dict[str, int | None] | None = 256
    """Number of images of the built-in dataset (None: the dataset's full/default size); for a mixture,
    one count per part or a {part: count} mapping (parts left out: default size)."""
    builtin_seed: int = 0
    """Seed of the built-in dataset."""
    builtin_phrasings: int = 0
    """Free phrasings added to each `avatars` image's captions (0-16; ldmkit.data.builtin.avatar_phrasings)."""
    builtin_phrasing_colours: bool = False
    """Add only free phrasings that name every colour the avatar shows (hair or hat, clothing)."""
    builtin_phrasing_words: str = "train"
    """Words of the free phrasings: "train" (held out from the free-avatars eval's) or "all" (the eval's too)."""
    builtin_emoji_aliases: bool = False
    """Add each `emoji` image's CLDR name and keywords as captions (ldmkit.data.builtin.emoji_aliases)."""
    image_size: int = 32
    """Square training image side in pixels (the model's image size)."""
    val_fraction: float = 0.1
    """Fraction of images in the validation split (by image-id hash; never trained on)."""
    test_fraction: float = 0.0
    """Fraction of images in the test split (never trained on)."""
    class_template: str = "a photo of {}"
    """Caption of each image of a class-folder dataset ('{}' is the class name)."""
    trim: TrimSection | None = None
    """How images are brought to image_size: border trim, crop focus, crop or pad (ldmkit data preview shows it).
    None: the defaults, except no border trim for data whose builder declares it (the built-in `shapes`, named
    by `builtin` or found as the dataset card of the `path` folder: its captions name sizes and positions, and
    trimming a shape's backdrop would zoom in on the shape)."""
    holdout: tuple[dict[str, str], ...] = ()
    """Label combinations never trained on, e.g. [{hair_color: red, mouth: big_smile}]: every image
    matching ANY of them goes to the test split (compositional generalisation, scored as "unseen")."""

    def __post_init__(self) -> None:
        owner = "data"
        if self.builtin is not None:
            if isinstance(self.builtin, str) and "+" in self.builtin:
                from ldmkit.data.builtin.mix import parse_parts, part_sizes

                part_sizes(parse_parts(self.builtin, BUILTIN_DATASETS), self.builtin_n)
            else:
                check_choice(owner, "builtin", self.builtin, BUILTIN_DATASETS)
        if self.path is None and self.builtin is None:
            raise UsageError("data.path is required unless data.builtin names a dataset to build")
        if self.builtin_n is not None and not isinstance(self.builtin_n, dict):
            check_int(owner, "builtin_n", self.builtin_n, minimum=2)
        elif isinstance(self.builtin_n, dict) and not (isinstance(self.builtin, str) and "+" in self.builtin):
            raise UsageError("data.builtin_n may be a {part: count} mapping only for a mixture such as emoji+avatars")
        check_int(owner, "builtin_seed", self.builtin_seed, minimum=0)
        from ldmkit.data.builtin.single import check_caption_options

        check_caption_options(self.builtin, self.builtin_phrasings, self.builtin_emoji_aliases,
                              self.builtin_phrasing_colours, self.builtin_phrasing_words, prefix="data.builtin_")
        check_int(owner, "image_size", self.image_size, minimum=16)
        check_float(owner, "val_fraction", self.val_fraction, minimum=0.0, below=1.0)
        check_float(owner, "test_fraction", self.test_fraction, minimum=0.0, below=1.0)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError("data.val_fraction + data.test_fraction must leave some images to train on (< 1)")
        if "{}" not in self.class_template:
            raise UsageError(f"data.class_template must contain '{{}}', got {self.class_template!r}")
        from ldmkit.data.splits import check_holdout

        object.__setattr__(self, "holdout", check_holdout(self.holdout, "data.holdout"))
        if self.trim is None:
            object.__setattr__(self, "trim", TrimSection(trim=self._border_trim()))

    def _border_trim(self) -> bool:
        """The border-trim default: the built-in dataset's own (ldmkit.data.builtin.single.border_trim), that of
        the built-in dataset whose card is in `path`, else trim."""
        from ldmkit.data.builtin.single import border_trim, card_border_trim

        if isinstance(self.builtin, str):
            return border_trim(self.builtin)
        from_card = card_border_trim(self.path) if self.path is not None else None
        return True if from_card is None else from_card
