"""Recipes of the three component trainers: typed sections read from YAML (`configs/*.yaml`).

    recipe = load_recipe("configs/tiny.yaml", UNetRecipe, ["train.steps=20"])

Every recipe has `data` (where the images come from), `model` (what to start from) and `train`
(the shared loop's `TrainConfig`), plus one section of its own: `unet`, `vae` or `clip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ldmkit.config.checks import check_bool, check_choice, check_float, check_int
from ldmkit.config.training import TrainConfig
from ldmkit.errors import UsageError

BUILTIN_DATASETS = ("shapes", "emoji", "avatars")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TRAINERS = ("unet", "vae", "clip")


@dataclass(frozen=True)
class DataSection:
    """Where the training images come from and how they are split."""

    path: str | None = None
    """Dataset folder (any format CaptionDataset.open reads); None: RUN_DIR/dataset (needs `builtin`)."""
    builtin: str | None = None
    """Build this built-in dataset (shapes, emoji, avatars) at `path` when the folder is missing."""
    builtin_n: int | None = 256
    """Number of images of the built-in dataset (None: the dataset's full/default size)."""
    builtin_seed: int = 0
    """Seed of the built-in dataset."""
    image_size: int = 32
    """Square training image side in pixels (the model's image size)."""
    val_fraction: float = 0.1
    """Fraction of images in the validation split (by image-id hash; never trained on)."""
    test_fraction: float = 0.0
    """Fraction of images in the test split (never trained on)."""
    class_template: str = "a photo of {}"
    """Caption of each image of a class-folder dataset ('{}' is the class name)."""

    def __post_init__(self) -> None:
        owner = "data"
        if self.builtin is not None:
            check_choice(owner, "builtin", self.builtin, BUILTIN_DATASETS)
        if self.path is None and self.builtin is None:
            raise UsageError("data.path is required unless data.builtin names a dataset to build")
        if self.builtin_n is not None:
            check_int(owner, "builtin_n", self.builtin_n, minimum=2)
        check_int(owner, "builtin_seed", self.builtin_seed, minimum=0)
        check_int(owner, "image_size", self.image_size, minimum=16)
        check_float(owner, "val_fraction", self.val_fraction, minimum=0.0, below=1.0)
        check_float(owner, "test_fraction", self.test_fraction, minimum=0.0, below=1.0)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError("data.val_fraction + data.test_fraction must leave some images to train on (< 1)")
        if "{}" not in self.class_template:
            raise UsageError(f"data.class_template must contain '{{}}', got {self.class_template!r}")


@dataclass(frozen=True)
class ModelSection:
    """What the trained model starts from."""

    preset: str = "tiny"
    """Architecture preset (tiny, small64, sd15, sd21) used when `init_from` is None."""
    init_from: str | None = None
    """A model folder to fine-tune instead of building `preset` from scratch."""
    text_encoder: str | None = None
    """Text encoder for a fresh preset: 'clip', 'minilm', a model folder, or None (the preset's)."""
    seed: int = 0
    """Seed of the random initialisation."""
    vae_from: str | None = None
    """A model folder (e.g. a `train vae` run's final/) whose trained VAE and scaling factor replace the start's."""

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise UsageError(f"model.preset must be a preset name, got {self.preset!r}")
        check_int("model", "seed", self.seed, minimum=0)


@dataclass(frozen=True)
class UNetSection:
    """The diffusion objective of the UNet trainer."""

    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the UNet predicts: the noise (epsilon) or v = sqrt(ab) eps - sqrt(1-ab) x0 (Salimans & Ho 2022)."""
    caption_dropout: float = 0.1
    """Probability of replacing a caption with the empty prompt (trains the unconditional branch CFG uses)."""
    min_snr_gamma: float = 5.0
    """Min-SNR-gamma loss weighting (Hang et al. 2023); 0 turns it off (plain MSE)."""
    noise_offset: float = 0.0
    """Scale of a per-channel constant added to the noise (lets the model learn very dark/bright images)."""
    zero_terminal_snr: bool = False
    """Rescale the betas so the last timestep is pure noise (Lin et al. 2023); needs v_prediction."""
    latent_sample: bool = True
    """Draw training latents from the VAE posterior (mean + std * noise, as Stable Diffusion did); false
    uses the posterior mean (needed when the VAE's posterior std is not small, e.g. an untrained VAE)."""
    class_conditional: bool = False
    """Caption every image with data.class_template of its class label (class-folder datasets)."""
    validation_prompts: tuple[str, ...] = ()
    """Prompts drawn into a grid at each validation (train.validate_every); empty: the first val captions."""
    validation_steps: int = 10
    """Sampler steps of the validation images."""

    def __post_init__(self) -> None:
        owner = "unet"
        check_choice(owner, "prediction_type", self.prediction_type, PREDICTION_TYPES)
        check_float(owner, "caption_dropout", self.caption_dropout, minimum=0.0, maximum=1.0)
        check_float(owner, "min_snr_gamma", self.min_snr_gamma, minimum=0.0)
        check_float(owner, "noise_offset", self.noise_offset, minimum=0.0)
        check_bool(owner, "zero_terminal_snr", self.zero_terminal_snr)
        check_bool(owner, "class_conditional", self.class_conditional)
        check_int(owner, "validation_steps", self.validation_steps, minimum=1)
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise UsageError("unet.zero_terminal_snr needs unet.prediction_type: v_prediction "
                             "(epsilon carries no information at zero SNR, Lin et al. 2023 §3.2)")


@dataclass(frozen=True)
class UNetRecipe:
    """`ldmkit train unet`: a text-conditional UNet trained on cached latents."""

    data: DataSection = field(default_factory=lambda: DataSection(builtin="shapes"))
    """Dataset section."""
    model: ModelSection = field(default_factory=ModelSection)
    """Starting point."""
    unet: UNetSection = field(default_factory=UNetSection)
    """Diffusion objective."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared loop settings."""


@dataclass(frozen=True)
class VAESection:
    """Losses of the autoencoder trainer."""

    crop: int = 0
    """Side of the random training crops in pixels; 0 = data.image_size (no crop)."""
    kl_weight: float = 1e-6
    """Weight of the KL term (small: the latent only needs to stay near a Gaussian)."""
    gradient_weight: float = 1.0
    """Weight of the L1 distance between image gradients (the structure term; no LPIPS offline)."""
    disc_start: int = 0
    """Step after which a patch discriminator's adversarial loss is added; 0 = never."""
    disc_weight: float = 0.1
    """Weight of the adversarial (hinge) term once it starts."""
    scale_samples: int = 256
    """Training images whose latents measure the scaling factor 1/std."""

    def __post_init__(self) -> None:
        owner = "vae"
        check_int(owner, "crop", self.crop, minimum=0)
        check_int(owner, "disc_start", self.disc_start, minimum=0)
        check_int(owner, "scale_samples", self.scale_samples, minimum=1)
        for name in ("kl_weight", "gradient_weight", "disc_weight"):
            check_float(owner, name, getattr(self, name), minimum=0.0)


@dataclass(frozen=True)
class VAERecipe:
    """`ldmkit train vae`: an AutoencoderKL from a preset (or a model folder's VAE)."""

    data: DataSection = field(default_factory=lambda: DataSection(builtin="shapes"))
    """Dataset section."""
    model: ModelSection = field(default_factory=ModelSection)
    """Starting point (the preset's VAE or `init_from`'s)."""
    vae: VAESection = field(default_factory=VAESection)
    """Losses."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared loop settings."""


@dataclass(frozen=True)
class ClipSection:
    """The contrastive dual encoder (image tower + projected text tower)."""

    embed_dim: int = 64
    """Width of the shared, L2-normalised embedding."""
    image_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the image tower's stride-2 conv stages."""
    tune_text: bool = False
    """Also train the text encoder (default: frozen, only the projection learns)."""
    init_temperature: float = 0.07
    """Starting softmax temperature (CLIP's 0.07); the learned logit scale is clamped at 100."""
    eval_split: Literal["val", "test"] = "val"
    """Held-out split of the before/after retrieval report."""

    def __post_init__(self) -> None:
        owner = "clip"
        check_int(owner, "embed_dim", self.embed_dim, minimum=2)
        if not self.image_channels or not all(isinstance(c, int) and c >= 1 for c in self.image_channels):
            raise UsageError(f"clip.image_channels must be a non-empty list of positive ints, got {self.image_channels!r}")
        check_bool(owner, "tune_text", self.tune_text)
        check_float(owner, "init_temperature", self.init_temperature, positive=True)
        check_choice(owner, "eval_split", self.eval_split, ("val", "test"))


@dataclass(frozen=True)
class ClipRecipe:
    """`ldmkit train clip`: a dual encoder for scoring and reranking, saved as clip/ in a model folder."""

    data: DataSection = field(default_factory=lambda: DataSection(builtin="shapes"))
    """Dataset section."""
    model: ModelSection = field(default_factory=ModelSection)
    """Where the text encoder comes from (init_from's, or the preset's)."""
    clip: ClipSection = field(default_factory=ClipSection)
    """Dual-encoder settings."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared loop settings."""


RECIPES = {"unet": UNetRecipe, "vae": VAERecipe, "clip": ClipRecipe}
