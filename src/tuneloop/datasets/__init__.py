"""tuneloop.datasets"""
