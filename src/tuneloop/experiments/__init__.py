"""tuneloop.experiments"""
