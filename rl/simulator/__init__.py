"""User simulator (RecSim NG-style: user, corpus, recommender, metrics) on the real catalog."""

from rl.simulator.config import SimulatorConfig
from rl.simulator.corpus import Corpus, build_corpus
from rl.simulator.simulation import Simulator

__all__ = ["Corpus", "SimulatorConfig", "Simulator", "build_corpus"]
