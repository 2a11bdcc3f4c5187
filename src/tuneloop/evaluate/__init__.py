"""tuneloop.evaluate"""
