"""What the free-phrasing gap is made of: trained words or new ones (issue 17; docs/quality.md).

    python scripts/vocabulary_gap.py eval-free eval-tpl [--json vocabulary.json] [--condition guidance=7.5]

eval-free / eval-tpl: `ldmkit eval MODEL ... --prompt-set free-avatars` / `free-avatars-templates` of the same
avatars. Each attribute a free prompt names is grouped by its phrase: one a model trained with the builder's
phrasings has seen (shared or train pool, or the template captions' own words), or a new one, and then by whether
MODEL's text encoder puts the new phrase nearest a trained phrase that means the same
(`ldmkit.evaluation.phrasing_vocabulary`). Prints each group's free and template accuracy and their paired
difference (bootstrap 95% intervals), then every new phrase with its nearest trained phrase.
"""

from free_phrasing_gap import cli, fmt, write_json  # this folder's sibling script: the same command line

from ldmkit.evaluation.phrasing_vocabulary import GROUPS, vocabulary_gap


def main(free, control, out, condition=None) -> None:
    gap = vocabulary_gap(free, control, condition=condition)
    print(f"{gap['condition']}: {gap['images']} images, model trained on phrasing words {gap['phrasing_words']!r}; "
          "(image, attribute) pairs by the phrase naming the attribute")
    for name in GROUPS:
        row = gap["groups"][name]
        if "free" not in row:
            print(f"  {name:<52} {row['n']:>4}")
            continue
        print(f"  {name:<52} {row['n']:>4}  free {fmt(row['free'])}  templates {fmt(row['templates'])}  "
              f"difference {fmt(row['difference'])}")
    print("\nnew phrases (n, free accuracy) -> the trained phrase the text encoder puts nearest (cosine):")
    new = [(k, w) for k, w in gap["words"].items() if w["status"] != GROUPS[0]]
    for key, word in sorted(new, key=lambda kw: (kw[1]["status"], kw[1]["free"], kw[0])):
        mark = "right" if word["status"] == GROUPS[1] else "WRONG"
        print(f"  {key:<40} {word['n']:>3} {word['free']:.2f}  -> {word['nearest']} ({word['similarity']:.2f}, {mark})")
    write_json(gap, out)


if __name__ == "__main__":
    cli(__doc__, main, "eval folder of the free-avatars run", "eval folder of the free-avatars-templates run")
