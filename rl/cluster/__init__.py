"""Going from one machine to a Ray cluster: config checks, the fake multi-node cluster, the proof, starting Ray."""
