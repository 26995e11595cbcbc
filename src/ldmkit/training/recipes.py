"""Recipes of the component trainers: typed sections read from YAML (`configs/*.yaml`).

    recipe = load_recipe("configs/tiny.yaml", UNetRecipe, ["train.steps=20"])

Every recipe has `data` (where the images come from), `model` (what to start from) and `train`
(the shared loop's `TrainConfig`), plus one section of its own: `unet`, `vae`, `clip` or `attributes`
(the attribute classifier's recipe has no `model`: it starts from scratch); `dreambooth` may replace `data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ldmkit.config.checks import check_bool, check_choice, check_float, check_int
from ldmkit.config.training import AugmentSection, TrainConfig, UNetAugmentSection
from ldmkit.errors import UsageError
from ldmkit.training.data_section import DataSection
from ldmkit.training.embedding_recipe import EmbeddingSection, check_embedding_unet
from ldmkit.training.recipes_personal import DreamBoothSection, LoraSection, check_dreambooth

PREDICTION_TYPES = ("epsilon", "v_prediction")
TRAINERS = ("unet", "vae", "clip", "attributes", "lora", "embedding")


@dataclass(frozen=True)
class ModelSection:
    """What the trained model starts from."""

    preset: str | None = None
    """Architecture preset (tiny, small64, sd15, sd21) of a fresh model (None: tiny). With `init_from` it may only
    name that folder's own preset (the architecture comes from the folder; another name would have no effect)."""
    init_from: str | None = None
    """A model folder to fine-tune instead of building `preset` from scratch ("default": the shipped model)."""
    text_encoder: str | None = None
    """Text encoder for a fresh preset: 'clip', 'minilm', a model folder, or None (the preset's)."""
    seed: int = 0
    """Seed of the random initialisation."""
    vae_from: str | None = None
    """A model folder (e.g. a `train vae` run's final/) whose trained VAE and scaling factor replace the start's."""
    latent_channels: int | None = None
    """Latent channels of a fresh preset (VAE latents and UNet input/output); None: the preset's (4)."""

    def __post_init__(self) -> None:
        if self.preset is not None and (not isinstance(self.preset, str) or not self.preset):
            raise UsageError(f"model.preset must be a preset name, got {self.preset!r}")
        check_int("model", "seed", self.seed, minimum=0)
        if self.latent_channels is not None:
            check_int("model", "latent_channels", self.latent_channels, minimum=1)
            if self.init_from is not None:
                raise UsageError("model.latent_channels builds a fresh preset; it cannot change model.init_from's "
                                 f"architecture ({self.init_from})")
        if self.init_from is not None and self.text_encoder is not None:
            raise UsageError(f"model.text_encoder ({self.text_encoder}) has no effect with model.init_from "
                             f"({self.init_from}): training starts from that folder's own text encoder. To put another "
                             "text encoder into a model folder, use `ldmkit model compose --from FOLDER --text-encoder "
                             "ENCODER --out NEW` and train from NEW")


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
    beta_schedule: str | None = None
    """Noise schedule: linear, scaled_linear, squaredcos_cap_v2 (Nichol & Dhariwal 2021) or sigmoid (Jabri et
    al. 2022); None: the start model's (scaled_linear for the presets)."""
    beta_start: float | None = None
    """First beta of the linear / scaled_linear / sigmoid schedules; None: the start model's."""
    beta_end: float | None = None
    """Last beta of those schedules; None: the start model's."""
    scheduler: str | None = None
    """diffusers scheduler class written into the model folder (e.g. DDIMScheduler); None: the start model's if
    it can represent the schedule, else DDIMScheduler, else DDPMScheduler (the only one with sigmoid betas)."""
    latent_sample: bool = True
    """Draw training latents from the VAE posterior (mean + std * noise, as Stable Diffusion did); false
    uses the posterior mean (needed when the VAE's posterior std is not small, e.g. an untrained VAE)."""
    class_conditional: bool = False
    """Caption every image with data.class_template of its class label (class-folder datasets)."""
    validation_prompts: tuple[str, ...] = ()
    """Prompts drawn into a grid at each validation (train.validate_every); empty: the first val captions."""
    validation_steps: int = 10
    """Sampler steps of the validation images."""
    eval_clip: str | None = None
    """A model folder holding clip/ (or a clip/ folder): at every validation, K val captions are generated and
    scored with it (CLIP score, prompt retrieval among the K) into RUN_DIR/eval.jsonl and eval_curve.png."""
    eval_prompts: int = 32
    """K, the number of val captions of that in-training evaluation (one image each), evenly spaced over the val
    split (so a mixture's sources each get their share)."""
    eval_attributes: str | None = None
    """An attribute classifier (a model folder holding attributes/, or a `train attributes` run's final/): that
    evaluation also reads the avatars among the K images and records their attribute accuracy."""
    repeats: tuple[dict[str, Any], ...] = ()
    """How often each training image comes per epoch: [{where: {column: value, ...}, times: k}, ...]; an image takes
    the first rule whose labels it matches (k times, 1..100), others come once. E.g. every emoji without a skin tone
    3 times ({where: {source: emoji, skin_tone: none}, times: 3}), so the designs drawn once are not outnumbered by
    those drawn in six tones. `train unet` on `data` only."""

    def __post_init__(self) -> None:
        owner = "unet"
        check_choice(owner, "prediction_type", self.prediction_type, PREDICTION_TYPES)
        check_float(owner, "caption_dropout", self.caption_dropout, minimum=0.0, maximum=1.0)
        check_float(owner, "min_snr_gamma", self.min_snr_gamma, minimum=0.0)
        check_float(owner, "noise_offset", self.noise_offset, minimum=0.0)
        check_bool(owner, "zero_terminal_snr", self.zero_terminal_snr)
        check_bool(owner, "class_conditional", self.class_conditional)
        check_int(owner, "validation_steps", self.validation_steps, minimum=1)
        check_int(owner, "eval_prompts", self.eval_prompts, minimum=2)
        from ldmkit.training.sampler import check_repeats

        object.__setattr__(self, "repeats", check_repeats(self.repeats))
        if self.eval_clip is not None and not isinstance(self.eval_clip, str):
            raise UsageError(f"unet.eval_clip must be a folder path, got {self.eval_clip!r}")
        if self.eval_attributes is not None and not isinstance(self.eval_attributes, str):
            raise UsageError(f"unet.eval_attributes must be a folder path, got {self.eval_attributes!r}")
        if self.eval_clip is None and self.eval_attributes is not None:
            raise UsageError("unet.eval_attributes has no effect without unet.eval_clip (the in-training evaluation "
                             "it adds to)")
        if self.eval_clip is None and self.eval_prompts != 32:
            raise UsageError(f"unet.eval_prompts ({self.eval_prompts}) has no effect without unet.eval_clip (the dual "
                             "encoder that scores those prompts while training)")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise UsageError("unet.zero_terminal_snr needs unet.prediction_type: v_prediction "
                             "(epsilon carries no information at zero SNR, Lin et al. 2023 §3.2)")
        self._check_schedule()

    def _check_schedule(self) -> None:
        """The schedule keys, and whether unet.scheduler can represent them (again with the start model's
        config before training: ldmkit.diffusion.scheduler_classes.trained_scheduler_config)."""
        from ldmkit.diffusion.beta_schedules import BETA_SCHEDULES
        from ldmkit.diffusion.scheduler_classes import check_scheduler_choice

        if self.beta_schedule is not None:
            check_choice("unet", "beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        for name in ("beta_start", "beta_end"):
            if getattr(self, name) is not None:
                check_float("unet", name, getattr(self, name), positive=True, below=1.0)
        if self.beta_schedule == "squaredcos_cap_v2" and (self.beta_start is not None or self.beta_end is not None):
            raise UsageError("unet.beta_start/beta_end have no effect with beta_schedule squaredcos_cap_v2 (the "
                             "cosine schedule has no end points)")
        if self.beta_start is not None and self.beta_end is not None and self.beta_start >= self.beta_end:
            raise UsageError(f"unet.beta_start ({self.beta_start}) must be < unet.beta_end ({self.beta_end})")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise UsageError(f"unet.scheduler must be a diffusers scheduler class name, got {self.scheduler!r}")
        check_scheduler_choice(self.scheduler, self.beta_schedule, self.zero_terminal_snr)


@dataclass(frozen=True)
class UNetRecipe:
    """`ldmkit train unet`: a text-conditional UNet trained on cached latents of `data` (or of `dreambooth`)."""

    data: DataSection | None = None
    """Dataset section; None: the built-in shapes (DataSection(builtin="shapes")), or nothing with `dreambooth`."""
    model: ModelSection = field(default_factory=ModelSection)
    """Starting point."""
    unet: UNetSection = field(default_factory=UNetSection)
    """Diffusion objective."""
    augment: UNetAugmentSection = field(default_factory=UNetAugmentSection)
    """Caption-aware flips, random resized crops and colour jitter (off by default), as cached views."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared loop settings."""
    dreambooth: DreamBoothSection | None = None
    """Subject images + prior preservation instead of `data` (ldmkit.training.dreambooth)."""
    TRAINER: ClassVar[str] = "unet"

    def __post_init__(self) -> None:
        if self.data is None and self.dreambooth is None and self.TRAINER != "lora":  # `train lora` has no default
            object.__setattr__(self, "data", DataSection(builtin="shapes"))
        check_dreambooth(self.data, self.unet, self.dreambooth, self.TRAINER)
        if self.unet.repeats and (self.TRAINER != "unet" or self.dreambooth is not None):
            raise UsageError(f"unet.repeats has no effect in `train {self.TRAINER}`"
                             f"{' with dreambooth' if self.dreambooth is not None else ''}: it repeats the images of "
                             "`data` in `train unet`")
        if self.unet.eval_clip is not None and not self.train.validate_every:
            raise UsageError(f"unet.eval_clip ({self.unet.eval_clip}) has no effect with train.validate_every 0: the "
                             "in-training evaluation runs at each validation; set train.validate_every N")


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
    tune: Literal["all", "decoder"] = "all"
    """What trains. "decoder": only the decoder (and post_quant_conv) of `model.init_from`'s / `model.vae_from`'s VAE;
    the encoder, hence every latent and the scaling factor, stays as it was, so a UNet trained on the start's
    latents works unchanged with the result (as Stable Diffusion's ft-MSE decoder was made)."""

    def __post_init__(self) -> None:
        owner = "vae"
        check_choice(owner, "tune", self.tune, ("all", "decoder"))
        if self.tune == "decoder":
            for name, default in (("kl_weight", 1e-6), ("scale_samples", 256)):
                if getattr(self, name) != default:
                    raise UsageError(f"vae.{name} ({getattr(self, name)}) has no effect with vae.tune decoder: the "
                                     "encoder is frozen, so the KL term and the scaling factor do not change")
        check_int(owner, "crop", self.crop, minimum=0)
        check_int(owner, "disc_start", self.disc_start, minimum=0)
        check_int(owner, "scale_samples", self.scale_samples, minimum=1)
        for name in ("kl_weight", "gradient_weight", "disc_weight"):
            check_float(owner, name, getattr(self, name), minimum=0.0)
        if self.disc_start == 0 and self.disc_weight != 0.1:
            raise UsageError(f"vae.disc_weight ({self.disc_weight}) has no effect while vae.disc_start is 0 (no "
                             "discriminator); set vae.disc_start to the step the adversarial loss starts")


@dataclass(frozen=True)
class VAERecipe:
    """`ldmkit train vae`: an AutoencoderKL from a preset (or a model folder's VAE)."""

    data: DataSection = field(default_factory=lambda: DataSection(builtin="shapes"))
    """Dataset section."""
    model: ModelSection = field(default_factory=ModelSection)
    """Starting point (the preset's VAE or `init_from`'s)."""
    vae: VAESection = field(default_factory=VAESection)
    """Losses."""
    augment: AugmentSection = field(default_factory=AugmentSection)
    """Flips (p 0.5 by default), random resized crops and colour jitter of the training images, every step."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared loop settings."""


@dataclass(frozen=True)
class ClipSection:
    """The contrastive dual encoder (image tower + projected text tower)."""

    embed_dim: int = 64
    """Width of the shared, L2-normalised embedding."""
    image_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the image tower's stride-2 conv stages."""
    tune_text: bool | None = None
    """Train the text tower too. None: the start's choice (a fresh dual encoder: frozen, only the projection
    learns; clip.init_from ldmkit's own dual encoder: as it was trained; a CLIPModel start: tuned)."""
    tune_image: bool | None = None
    """Train the image tower (None: yes). false freezes it; only with clip.init_from (a fresh tower must learn)."""
    tune_last_layers: int = 0
    """With a CLIPModel start: train only the last N transformer layers (+ the final norm) of each tuned tower;
    0: every layer. The two projections and the temperature always train."""
    init_temperature: float = 0.07
    """Starting softmax temperature (CLIP's 0.07); the learned logit scale is clamped at 100."""
    eval_split: Literal["val", "test"] = "val"
    """Held-out split of the before/after retrieval report."""
    init_from: str | None = None
    """Fine-tune this dual encoder instead of starting from random weights: a model folder holding clip/ (or a
    clip/ folder, or a `train clip` run), or a transformers CLIPModel folder (config.json with text_config and
    vision_config, model.safetensors, tokenizer files) whose towers, projections and temperature are all kept.
    Its architecture is kept: embed_dim / image_channels / init_temperature set otherwise are an error."""

    def __post_init__(self) -> None:
        owner = "clip"
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise UsageError(f"clip.init_from must be a folder path, got {self.init_from!r}")
        check_int(owner, "embed_dim", self.embed_dim, minimum=2)
        if not self.image_channels or not all(isinstance(c, int) and c >= 1 for c in self.image_channels):
            raise UsageError(f"clip.image_channels must be a non-empty list of positive ints, got {self.image_channels!r}")
        for name in ("tune_text", "tune_image"):
            if getattr(self, name) is not None:
                check_bool(owner, name, getattr(self, name))
        check_int(owner, "tune_last_layers", self.tune_last_layers, minimum=0)
        check_float(owner, "init_temperature", self.init_temperature, positive=True)
        if self.init_from is None and self.tune_image is False:
            raise UsageError("clip.tune_image: false needs clip.init_from: a fresh image tower that never trains "
                             "has nothing to offer")
        if self.init_from is None and self.tune_last_layers:
            raise UsageError("clip.tune_last_layers has no effect without clip.init_from (a CLIPModel folder): a "
                             "fresh dual encoder trains its whole ConvNet image tower")
        if self.tune_last_layers and self.tune_text is False and self.tune_image is False:
            raise UsageError("clip.tune_last_layers has no effect when clip.tune_text and clip.tune_image are both "
                             "false (only the projections and the temperature train)")
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


@dataclass(frozen=True)
class AttributesSection:
    """The attribute classifier (one softmax head per label column) that scores generated images."""

    columns: tuple[str, ...] = ()
    """Label columns to classify; empty: every column with at least two values among the chosen rows."""
    where: dict[str, str] = field(default_factory=dict)
    """Use only rows whose labels match all of these, e.g. {source: avatars} in a mixed dataset."""
    channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the stride-2 conv stages; the last feature map is kept whole (attributes have places)."""
    shift: int = 4
    """Largest random translation in pixels (replicate padding); no flips: some attributes are sided."""

    def __post_init__(self) -> None:
        owner = "attributes"
        if not all(isinstance(c, str) and c for c in self.columns) or len(set(self.columns)) != len(self.columns):
            raise UsageError(f"attributes.columns must be distinct label column names, got {list(self.columns)}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.where.items()):
            raise UsageError(f"attributes.where must map label columns to values (text), got {self.where!r}")
        if not self.channels or not all(isinstance(c, int) and c >= 1 for c in self.channels):
            raise UsageError(f"attributes.channels must be a non-empty list of positive ints, got {self.channels!r}")
        check_int(owner, "shift", self.shift, minimum=0)


@dataclass(frozen=True)
class AttributesRecipe:
    """`ldmkit train attributes`: the attribute classifier, saved as attributes/ (a model folder can hold it)."""

    data: DataSection = field(default_factory=lambda: DataSection(builtin="avatars", builtin_n=2000, image_size=64))
    """Dataset section (the classifier trains on the train split, reports accuracy on val + test)."""
    attributes: AttributesSection = field(default_factory=AttributesSection)
    """Classifier settings."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=64, lr=2e-3, warmup_steps=100, lr_schedule="cosine", checkpoint_every=500, log_every=50))
    """Shared loop settings (on 6,000 avatars at 64 px: >= 95% on 11 of 12 columns, ~25 min on one CPU thread)."""


@dataclass(frozen=True)
class LoraRecipe(UNetRecipe):
    """`ldmkit train lora`: the UNet recipe's loss, training only LoRA adapters on a frozen UNet, on `data` or on
    DreamBooth's subject images (exactly one of the two: no built-in default)."""

    lora: LoraSection = field(default_factory=LoraSection)
    """The adapters."""
    TRAINER: ClassVar[str] = "lora"


@dataclass(frozen=True)
class EmbeddingRecipe(UNetRecipe):
    """`ldmkit train embedding`: the UNet recipe's data and loss, training only new token vectors (textual inversion)."""

    unet: UNetSection = field(default_factory=lambda: UNetSection(caption_dropout=0.0))
    """Diffusion objective of the frozen UNet (its prediction type must be the model's; no caption dropout)."""
    embedding: EmbeddingSection = field(default_factory=EmbeddingSection)
    """The token and its vectors (ldmkit.training.embedding_recipe)."""
    TRAINER: ClassVar[str] = "embedding"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_embedding_unet(self.unet)


RECIPES = {"unet": UNetRecipe, "vae": VAERecipe, "clip": ClipRecipe, "attributes": AttributesRecipe,
           "lora": LoraRecipe, "embedding": EmbeddingRecipe}
