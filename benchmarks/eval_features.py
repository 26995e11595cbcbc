"""Issue 5's budget: evaluating 1,000 64x64 images (features + all metrics, no generation) in <= 60 s.

    .venv/bin/python benchmarks/eval_features.py [--n 1000] [--threads 2]

Features come from the dual encoder's image tower (default DualEncoderConfig, random weights: the cost
does not depend on the weights); the metrics are FD, KID, CMMD and the CLIP score, each with a
1,000-replicate bootstrap interval, real vs generated sets of n images each.
"""

import argparse
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ldmkit.evaluation.clip_score import clip_score
    from ldmkit.evaluation.frechet import frechet_distance_ci
    from ldmkit.evaluation.kernel_metrics import cmmd_ci, kid_ci
    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig
    from ldmkit.models.presets import build_components

    text = build_components("tiny", seed=0).text_encoder
    config = DualEncoderConfig(text_hidden=text.hidden_size)
    model = DualEncoder(config, text).eval()
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(args.n, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = [torch.cat([model.encode_images(x[i:i + 250]) for i in range(0, args.n, 250)]) for x in (real, fake)]
        texts = model.encode_texts([f"a caption number {i}" for i in range(args.n)])
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    a, b = (f.numpy().astype("float64") for f in feats)
    frechet_distance_ci(a, b)
    kid_ci(a, b)
    cmmd_ci(a, b)
    clip_score(feats[1], texts).ci()
    t_metrics = time.perf_counter() - t0
    print(f"{args.n} vs {args.n} images at 64x64, embed dim {config.embed_dim}, {args.threads} threads")
    print(f"features (2 image sets + captions): {t_feat:.1f} s; metrics with CIs: {t_metrics:.1f} s; "
          f"total {t_feat + t_metrics:.1f} s (budget 60 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
