"""tuneloop.server"""
