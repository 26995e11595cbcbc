"""ldmkit.data"""
