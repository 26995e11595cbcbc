"""Recipe sections of personalization (issue 16): the LoRA adapters and DreamBooth's subject and prior images.

    lora: {rank: 8, alpha: 8, targets: attention, text_encoder: true, unet_lr: 1e-4, text_encoder_lr: 5e-5}
    dreambooth: {instance_data: runs/subject, instance_prompt: "a photo of zxq person",
                 class_prompt: "a photo of a person", class_images: 100, prior_loss_weight: 1.0}

`LoraRecipe` (ldmkit.training.recipes) holds them; `UNetRecipe` holds `dreambooth` too (full fine-tune). With
`dreambooth` the instance images replace the `data` section (ldmkit.training.dreambooth); without it `data` names
the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from ldmkit.config.checks import check_bool, check_choice, check_float, check_int
from ldmkit.errors import UsageError

MAX_LORA_RANK = 1024
MAX_INSTANCE_IMAGES = 100
MAX_CLASS_IMAGES = 1000
MAX_CLASS_STEPS = 200
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True)
class LoraSection:
    """`ldmkit train lora` (issue 16): the adapters added to the frozen UNet (ldmkit.training.lora_task)."""

    rank: int = 4
    """Rank r of every adapter (1..1024)."""
    alpha: float = 4.0
    """The update is scaled by alpha / rank (kohya's and peft's convention; alpha = rank: no scaling)."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training, in [0, 1)."""
    targets: str = "attention"
    """attention (to_q/k/v/out.0), transformer (every Linear and 1x1 conv of the transformer blocks) or locon
    (those plus the resnets' 3x3 convs, shortcuts, time projections and resamplers, as kohya's LoCon). On the
    text encoder: attention (q/k/v/out_proj of CLIP; query/key/value/attention.output.dense of MiniLM), else
    also the MLPs (fc1/fc2; intermediate.dense/output.dense), as kohya's default."""
    trigger_words: tuple[str, ...] = ()
    """Words the captions use for the subject; written into the file's metadata (`ldmkit lora inspect`)."""
    unet: bool = True
    """Add adapters to the UNet; false trains the text encoder's alone (needs text_encoder: true; kohya's
    network_train_text_encoder_only), the UNet's weights untouched."""
    text_encoder: bool = False
    """Also add adapters to the text encoder (written as kohya `lora_te_...` keys); the prompts are then encoded
    every step instead of read from the latent cache."""
    unet_lr: float | None = None
    """Peak learning rate of the UNet's adapters (None: train.lr); the warm-up/cosine shape is train's."""
    text_encoder_lr: float | None = None
    """Peak learning rate of the text encoder's adapters (None: train.lr); needs text_encoder: true."""
    diffusers_format: bool = False
    """Also write pytorch_lora_weights.safetensors (PEFT keys, what diffusers' save_lora_weights writes) next to
    every lora.safetensors, for `StableDiffusionPipeline.load_lora_weights(folder)`."""

    def __post_init__(self) -> None:
        owner = "lora"
        check_int(owner, "rank", self.rank, minimum=1)
        if self.rank > MAX_LORA_RANK:
            raise UsageError(f"lora.rank must be at most {MAX_LORA_RANK}, got {self.rank}")
        check_float(owner, "alpha", self.alpha, minimum=0.0)
        check_float(owner, "dropout", self.dropout, minimum=0.0, below=1.0)
        check_choice(owner, "targets", self.targets, ("attention", "transformer", "locon"))
        object.__setattr__(self, "trigger_words", tuple(str(w) for w in self.trigger_words))
        check_bool(owner, "unet", self.unet)
        check_bool(owner, "text_encoder", self.text_encoder)
        check_bool(owner, "diffusers_format", self.diffusers_format)
        for name in ("unet_lr", "text_encoder_lr"):
            if getattr(self, name) is not None:
                check_float(owner, name, getattr(self, name), positive=True)
        if not self.unet:
            if not self.text_encoder:
                raise UsageError("lora.unet: false leaves nothing to train; set lora.text_encoder: true to train the "
                                 "text encoder's adapters alone")
            if self.unet_lr is not None:
                raise UsageError("lora.unet_lr has no effect with lora.unet: false (no adapters on the UNet)")
            if self.targets == "locon":
                raise UsageError("lora.targets: locon adds the UNet's convolutions, which lora.unet: false leaves "
                                 "alone; on the text encoder it equals transformer: use that")
        if self.text_encoder_lr is not None and not self.text_encoder:
            raise UsageError("lora.text_encoder_lr has no effect without lora.text_encoder: true (no adapters on "
                             "the text encoder)")


@dataclass(frozen=True)
class DreamBoothSection:
    """DreamBooth (Ruiz et al. 2023): a subject from a few images bound to a rare identifier, with prior
    preservation by class images the base model itself generates (ldmkit.training.dreambooth)."""

    instance_data: str = ""
    """A folder of 1..100 images of the subject (every image gets instance_prompt; its own captions only with
    instance_captions). Trained at the base model's image size."""
    instance_prompt: str = ""
    """The caption of every instance image, with the identifier, e.g. "a photo of zxq person"."""
    instance_captions: bool = False
    """Also read each instance image's own captions (a `NAME.txt` beside it, kohya's sd-scripts layout, or the
    folder's metadata.jsonl) and train on "<instance_prompt>, <caption>" as well as the bare instance_prompt (one
    of them at random each time an image is drawn): captions that name what varies between the images
    (expression, background) keep the identifier from absorbing it, which helps composition."""
    class_prompt: str = ""
    """The subject's class without the identifier, e.g. "a photo of a person"; empty: no prior preservation."""
    class_images: int = 100
    """Class images generated by the base model (before any training) into RUN/class_images, 1..1000."""
    class_steps: int = 25
    """Sampler steps of each class image (with class_sampler), 1..200."""
    class_guidance: float | None = None
    """Classifier-free guidance of the class images; None: the base model's default."""
    class_sampler: str | None = None
    """Sampler of the class images (`ldmkit samplers`); None: the base model's default, recorded by name with the
    images so that a changed default cannot mix two priors in one folder."""
    prior_loss_weight: float = 1.0
    """loss = instance loss + prior_loss_weight * class loss (each batch: train.batch_size of each)."""

    def __post_init__(self) -> None:
        owner = "dreambooth"
        for name in ("instance_data", "instance_prompt", "class_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
                raise UsageError(f"dreambooth.{name} must be text of at most {MAX_PROMPT_CHARS} characters, "
                                 f"got {value!r:.80}")
        if not self.instance_data.strip():
            raise UsageError("dreambooth.instance_data must name a folder of images of the subject")
        if not self.instance_prompt.strip():
            raise UsageError("dreambooth.instance_prompt must be a prompt with the subject's identifier, e.g. "
                             "'a photo of zxq person'")
        check_bool(owner, "instance_captions", self.instance_captions)
        check_int(owner, "class_images", self.class_images, minimum=1)
        check_int(owner, "class_steps", self.class_steps, minimum=1)
        if self.class_images > MAX_CLASS_IMAGES or self.class_steps > MAX_CLASS_STEPS:
            raise UsageError(f"dreambooth.class_images must be at most {MAX_CLASS_IMAGES} and class_steps at most "
                             f"{MAX_CLASS_STEPS}, got {self.class_images} and {self.class_steps}")
        if self.class_guidance is not None:
            check_float(owner, "class_guidance", self.class_guidance, minimum=0.0, maximum=100.0)
        if self.class_sampler is not None:
            from ldmkit.diffusion.registry import get_sampler

            if not isinstance(self.class_sampler, str):
                raise UsageError(f"dreambooth.class_sampler must be a sampler name, got {self.class_sampler!r:.80}")
            get_sampler(self.class_sampler)  # an unknown name: a one-line error listing the samplers
        check_float(owner, "prior_loss_weight", self.prior_loss_weight, minimum=0.0)
        if not self.class_prompt.strip():
            defaults = (("class_images", 100), ("class_steps", 25), ("class_guidance", None), ("class_sampler", None),
                        ("prior_loss_weight", 1.0))
            changed = [name for name, default in defaults if getattr(self, name) != default]
            if changed:
                raise UsageError(f"dreambooth.{', dreambooth.'.join(changed)} ha{'s' if len(changed) == 1 else 've'} "
                                 "no effect without dreambooth.class_prompt (no prior preservation)")
        elif self.class_prompt.strip() == self.instance_prompt.strip():
            raise UsageError("dreambooth.class_prompt must differ from instance_prompt (it is the class without the "
                             "identifier)")


def check_dreambooth(data: object, unet, dreambooth: DreamBoothSection | None, trainer: str) -> None:
    """Where `train <trainer>`'s images come from: `data`, or in `train unet` / `train lora` `dreambooth`'s instance
    images (never both; `train lora` has no default dataset); and the `unet` settings DreamBooth refuses (it has
    no held-out captions and no class labels)."""
    if trainer == "lora" and data is None and dreambooth is None:
        raise UsageError("train lora needs a `data` section (a captioned dataset) or a `dreambooth` section (a "
                         "folder of subject images)")
    if dreambooth is None:
        return
    if trainer == "embedding":
        raise UsageError("dreambooth has no effect in `train embedding` (its captions are embedding.templates); "
                         "DreamBooth trains with `train unet` (full fine-tune) or `train lora`")
    if data is not None:
        raise UsageError("`data` has no effect with `dreambooth`: the training images are dreambooth.instance_data "
                         "(+ generated class images), at the base model's image size; remove the data section")
    if unet.eval_clip is not None:
        raise UsageError("unet.eval_clip has no effect with dreambooth: there are no held-out captions to score")
    if unet.class_conditional:
        raise UsageError("unet.class_conditional has no effect with dreambooth: its captions are the instance and "
                         "class prompts")
