"""ldmkit.metrics: metrics on arrays (retrieval ranks, bootstrap confidence intervals), numpy only.

Below both `training` (in-training evaluation, the dual encoder's before/after report) and `evaluation`
(`ldmkit eval`), which never import each other: what both measure is written once, here.
"""
