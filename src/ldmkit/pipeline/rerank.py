"""Best-of-N reranking: generate N candidates, keep the one the dual encoder finds closest to the prompt.

    dual = load_dual_encoder("model/")                   # the model folder's clip/
    best = rerank_best_of(pipe, dual, "a red circle", 4, seed=10, steps=20)
    best.images[0], best.seeds[0], best.scores            # kept image, its seed, all N cosines

Candidate k uses seed + k (the pipeline's batch convention), so `pipe(prompt, seed=best.seeds[0])`
with the same settings reproduces the kept image. Scoring with the same encoder that an evaluation
later uses for its CLIP score makes that score optimistic: the images were chosen to maximise it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ldmkit.data.images import to_pixels
from ldmkit.errors import UsageError
from ldmkit.pipeline.txt2img import GenerationResult


@dataclass
class RerankedResult(GenerationResult):
    """A GenerationResult holding the one kept candidate, plus what the reranker saw."""

    scores: list[float] = field(default_factory=list)
    """Cosine(image embedding, prompt embedding) of every candidate, in candidate (seed) order."""
    candidate_seeds: list[int] = field(default_factory=list)
    """The seed of every candidate: seed, seed + 1, ..., seed + n - 1."""

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.candidate_seeds):
            raise UsageError(f"RerankedResult has {len(self.scores)} scores for {len(self.candidate_seeds)} candidates")
        if len(self.images) != 1 or len(self.seeds) != 1:
            raise UsageError("RerankedResult keeps exactly one image and its seed")


def candidate_scores(dual_encoder, prompt: str, images) -> torch.Tensor:
    """(len(images),) cosine of each PIL image's embedding with the prompt's embedding."""
    pixels = torch.cat([to_pixels(image) for image in images])
    with torch.no_grad():
        image_emb = dual_encoder.encode_images(pixels)
        text_emb = dual_encoder.encode_texts([prompt])
    return (image_emb @ text_emb.T)[:, 0].float().cpu()


def rerank_best_of(pipe, dual_encoder, prompt: str, n: int, *, seed: int = 0, **kwargs) -> RerankedResult:
    """Generate n candidates (seeds seed..seed+n-1) and keep the one whose image embedding has the
    highest cosine with the prompt embedding (ties: the lowest seed). kwargs go to `pipe(...)`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"best-of n must be an integer >= 1, got {n!r}")
    if "num_images" in kwargs:
        raise UsageError("rerank_best_of chooses num_images itself (n); do not pass it")
    if kwargs.get("trajectory"):
        raise UsageError("rerank_best_of does not record trajectories; generate the kept seed again with one")
    result = pipe(prompt, seed=seed, num_images=n, **kwargs)
    scores = candidate_scores(dual_encoder, prompt, result.images)
    best = int(torch.argmax(scores))  # argmax returns the first maximum: lowest seed on ties
    kept_seed = result.seeds[best]
    return RerankedResult(
        images=[result.images[best]], seeds=[kept_seed], params=replace(result.params, seed=kept_seed),
        latents=result.latents[best:best + 1], trajectory=None, warnings=list(result.warnings),
        scores=[float(s) for s in scores], candidate_seeds=list(result.seeds))
