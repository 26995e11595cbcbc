"""ldmkit.models"""
