"""Checkpoints registered before the layout change still load: the class paths they record stay put.

RLlib pickles the module, learner and pre-learner classes by their dotted paths into every
algorithm checkpoint (``class_and_ctor_args.pkl``). These are the paths found in a version
registered before the issue-11 move (read off its pickles with ``strings``); moving any of
them would make such versions unloadable, so this test pins them.
"""

import importlib

import pytest

RECORDED_CLASS_PATHS = [
    "rl.training.module.CandidateActorCriticModule",
    "rl.training.ppo_learner.OfflinePPOConfig",
    "rl.training.ppo_learner.OfflinePPOTorchLearner",
    "rl.training.episodes.SessionPreLearner",
]


@pytest.mark.parametrize("dotted", RECORDED_CLASS_PATHS)
def test_class_paths_recorded_in_checkpoints_still_import(dotted: str) -> None:
    module_name, class_name = dotted.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module_name), class_name), type)
