"""Encore's reinforcement-learning core: catalog, song embedding, retrieval, simulator,
training, long-term value and evaluation.

Everything in this package except the modules named ``*_ray`` / the RLlib wiring is plain
numpy/torch and can be used and tested without a Ray cluster.
"""
