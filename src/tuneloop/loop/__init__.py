"""tuneloop.loop"""
