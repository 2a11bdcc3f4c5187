"""tuneloop.train"""
