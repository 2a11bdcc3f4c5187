"""tuneloop"""
