"""Model backends behind one protocol (see base.py), default-model resolution, embedders."""
