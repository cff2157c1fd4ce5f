"""A small synthetic decision log in the row-per-step RLlib offline format.

For tests, the CLI smoke test and the training benchmark, before (and independently of)
the simulator: sessions of decisions where a random-ish logging policy picks among k
candidates and the known-best candidate is the one whose latent is closest in direction
to the user's taste. Rewards: 1 for the best candidate, 0 otherwise, plus small noise.
The logging policy's log-probability of each pick is recorded, as the contract requires.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl.decision.observation import ObservationLayout, encode_context


def synthetic_offline_steps(
    n_sessions: int = 200,
    session_length: int = 8,
    layout: ObservationLayout | None = None,
    seed: int = 0,
    logging_temperature: float = 0.5,
    padded_fraction: float = 0.2,
) -> pd.DataFrame:
    """Row-per-step offline data (columns of docs' RLlib offline format) as a DataFrame.

    ``logging_temperature`` scales how much the logging policy prefers the best candidate
    (0 = uniform); ``padded_fraction`` of decisions have k-1 real candidates.
    """
    layout = layout or ObservationLayout()
    rng = np.random.default_rng(seed)
    k, d, r = layout.k, layout.latent_dim, layout.n_betas
    rows: list[dict] = []
    for session in range(n_sessions):
        taste = rng.normal(size=d).astype(np.float32)
        current = rng.normal(size=d).astype(np.float32)
        hour, weekday = rng.integers(0, 24), rng.integers(0, 7)
        previous_obs = None
        for t in range(session_length):
            candidates = rng.normal(size=(k, d)).astype(np.float32)
            relationship = rng.uniform(0, 1, size=(k, r)).astype(np.float32) * (
                rng.random((k, 1)) < 0.3
            )
            mask = np.ones(k, np.float32)
            if k > 1 and rng.random() < padded_fraction:
                mask[-1] = 0.0
            affinity = candidates @ taste / (np.linalg.norm(candidates, axis=1) + 1e-6)
            affinity = np.where(mask > 0, affinity, -np.inf)
            best = int(np.argmax(affinity))
            logits = np.where(
                mask > 0, logging_temperature * np.nan_to_num(affinity, neginf=0), -np.inf
            )
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            action = int(rng.choice(k, p=probs))
            reward = float(action == best) + 0.05 * rng.normal()
            obs = layout.build(
                current[None],
                taste[None],
                encode_context(float(hour), float(weekday))[None],
                candidates[None],
                relationship[None],
                mask[None],
            )[0]
            if previous_obs is not None:
                rows[-1]["new_obs"] = obs.tolist()
            rows.append(
                {
                    "eps_id": f"session-{seed}-{session}",
                    "t": t,
                    "obs": obs.tolist(),
                    "actions": action,
                    "rewards": np.float32(reward),
                    "new_obs": obs.tolist(),
                    "terminateds": t == session_length - 1,
                    "truncateds": False,
                    "action_logp": np.float32(np.log(probs[action])),
                }
            )
            previous_obs = obs
            current = candidates[action]
    frame = pd.DataFrame(rows)
    frame["t"] = frame["t"].astype(np.int32)
    frame["actions"] = frame["actions"].astype(np.int64)
    return frame
