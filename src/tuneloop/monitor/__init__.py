"""tuneloop.monitor"""
