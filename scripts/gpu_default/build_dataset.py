from pathlib import Path
from ldmkit.data.builtin import build_dataset
if __name__ == "__main__":
    card = build_dataset("emoji+avatars", Path("/tmp/run/dataset"), n={"avatars": 6000}, seed=0, size=64)
    print(card["images"], card["parts"])
