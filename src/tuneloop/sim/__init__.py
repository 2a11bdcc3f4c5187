"""tuneloop.sim"""
