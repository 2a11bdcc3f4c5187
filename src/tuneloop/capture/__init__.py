"""tuneloop.capture"""
