"""ldmkit.pipeline"""
