"""ldmkit.config: typed settings dataclasses, YAML recipes and dotted overrides (no torch here)."""

from ldmkit.config.recipe import apply_overrides, dump_yaml, from_dict, load_recipe, to_dict
from ldmkit.config.training import TrainConfig

__all__ = ["TrainConfig", "apply_overrides", "dump_yaml", "from_dict", "load_recipe", "to_dict"]
