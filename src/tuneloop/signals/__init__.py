"""tuneloop.signals"""
