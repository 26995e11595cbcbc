"""ldmkit.data: caption datasets (readers, bad-input accounting, splits), augmentation, latent caches.

    from ldmkit.data import CaptionDataset
    ds = CaptionDataset.open("path/to/dataset")        # format detected; see formats.py

Torch is only imported by the modules that need it (augment, cache), and only when called.
"""

from ldmkit.data.dataset import CaptionDataset, Sample
from ldmkit.data.report import BadInputReport
from ldmkit.data.splits import SplitSpec, split_of

__all__ = ["BadInputReport", "CaptionDataset", "Sample", "SplitSpec", "split_of"]
