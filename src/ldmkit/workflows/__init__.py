"""ldmkit.workflows: multi-stage recipes (train, then ship, then evaluate), above both `training` and `evaluation`.

The only package that imports both: training and evaluation never import each other (tests/test_layers.py).
"""
