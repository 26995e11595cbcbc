"""ldmkit.config"""
