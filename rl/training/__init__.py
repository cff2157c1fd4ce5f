"""Offline actor-critic training on RLlib: the RLModule, the offline PPO learner, GAE,
episode building from logged sessions, training entry points.

Flow: logged decisions -> row-per-step offline data (rl/feedback/offline_steps.py) -> whole-session
RLlib episodes (episodes.py) -> RLlib MARWIL-driven offline pipeline with the offline PPO
learner (ppo_learner.py) -> checkpoint -> model registry (rl/registry.py).
"""
