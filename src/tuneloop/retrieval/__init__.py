"""tuneloop.retrieval"""
