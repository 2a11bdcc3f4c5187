"""tuneloop.registry"""
