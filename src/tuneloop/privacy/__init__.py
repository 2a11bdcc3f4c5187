"""tuneloop.privacy"""
