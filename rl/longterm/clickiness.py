"""Clickiness: P(listen | recommended) from user, item and context features (paper eq. 13).

Where it sits: the short-term model of the Q-scorers (``q_scoring``), trained on logged
impressions (every decision-log row is one shown recommendation with its outcome
``listened``). The paper's control policy ranks by it alone; the long-term arms multiply
it by stickiness. The same class, trained on (state, organic listen) samples, gives the
organic-listen probability P(org) of the resurfacing formula (eq. 18).

Model: a small torch MLP (or logistic regression with ``hidden_units=0``) on
``clickiness_features`` = [u, z, u ⊙ z, context, s, 1{s > 0}] (taste u, item latent z,
relationship state s), minimising the mean binary cross-entropy
−Σ [y log p + (1−y) log(1−p)] / n with Adam, features standardised on the training set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from rl.config_checks import require_at_least
from rl.decision.observation import encode_context


def clickiness_features(
    user_taste: np.ndarray,  # (..., D)
    item_latents: np.ndarray,  # (..., D)
    context: np.ndarray,  # (..., C)
    relationship: np.ndarray,  # (..., R)
    item_logit: np.ndarray | None = None,  # (...) per-item listen log-odds, optional
) -> np.ndarray:
    """(..., 3D + C + 2R [+ 1]) float32 features; leading dims broadcast.

    ``item_logit`` (``item_listen_logits``) plays the paper's item "clickiness vector": the
    latents say what a song sounds like, not how often it is tried once shown.
    """
    item_latents = np.asarray(item_latents, np.float32)
    shape = item_latents.shape[:-1]
    user_taste = np.broadcast_to(
        np.asarray(user_taste, np.float32), (*shape, item_latents.shape[-1])
    )
    context = np.asarray(context, np.float32)
    context = np.broadcast_to(context, (*shape, context.shape[-1]))
    relationship = np.asarray(relationship, np.float32)
    relationship = np.broadcast_to(relationship, (*shape, relationship.shape[-1]))
    heard = (relationship.max(axis=-1, keepdims=True) > 0).astype(np.float32)
    parts = [user_taste, item_latents, user_taste * item_latents, context, relationship, heard]
    if item_logit is not None:
        parts.append(np.broadcast_to(np.asarray(item_logit, np.float32), shape)[..., None])
    return np.concatenate(parts, axis=-1)


def item_listen_logits(
    items: np.ndarray, listened: np.ndarray, n_items: int, shrinkage: float = 20.0
) -> np.ndarray:
    """(n_items,) log-odds of the shrunken per-item listen rate on logged impressions:
    (listens + κ p̄) / (impressions + κ); items never shown get the overall rate p̄."""
    items = np.asarray(items, np.int64)
    listened = np.asarray(listened, np.float64)
    overall = float(listened.mean()) if len(listened) else 0.5
    shown = np.bincount(items, minlength=n_items)
    hits = np.bincount(items, weights=listened, minlength=n_items)
    rate = np.clip((hits + shrinkage * overall) / (shown + shrinkage), 1e-4, 1 - 1e-4)
    return np.log(rate / (1 - rate)).astype(np.float32)


class ClickinessModel:
    """P(listen | features), scikit-learn style (``fit`` / ``predict_proba``).

    Parameters
    ----------
    hidden_units : width of the one hidden layer; 0 gives logistic regression.
    epochs : passes over the data (minibatch Adam).
    batch_size : minibatch rows.
    learning_rate : Adam step size.
    weight_decay : L2 penalty on the weights.
    seed : torch seed, for reproducible fits.
    """

    def __init__(
        self,
        hidden_units: int = 32,
        epochs: int = 20,
        batch_size: int = 512,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed
        require_at_least(self, 0, "hidden_units")
        require_at_least(self, 1, "epochs", "batch_size")
        self.item_logit_: np.ndarray | None = None  # (N,) set by callers that use item priors

    def _network(self, n_features: int) -> nn.Module:
        if self.hidden_units == 0:
            return nn.Linear(n_features, 1)
        return nn.Sequential(
            nn.Linear(n_features, self.hidden_units), nn.ReLU(), nn.Linear(self.hidden_units, 1)
        )

    def fit(self, features: np.ndarray, listened: np.ndarray) -> ClickinessModel:
        x = np.asarray(features, np.float32)
        y = np.asarray(listened, np.float32).reshape(-1)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(
                f"features (n, F) and listened (n,) must align, got {x.shape}, {y.shape}"
            )
        torch.manual_seed(self.seed)
        generator = np.random.default_rng(self.seed)
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        # Constant columns (e.g. a context never seen varying) keep unit scale, so values
        # unseen in training do not blow up to ±1e6 standard deviations.
        self.scale_ = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        self.n_features_in_ = x.shape[1]
        self.network_ = self._network(x.shape[1])
        # Start at the base rate so few epochs already give calibrated probabilities.
        base = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        last = self.network_[-1] if isinstance(self.network_, nn.Sequential) else self.network_
        assert isinstance(last, nn.Linear)  # _network ends in a Linear output layer
        with torch.no_grad():
            last.bias.fill_(float(np.log(base / (1 - base))))
        optimizer = torch.optim.Adam(
            self.network_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        loss_fn = nn.BCEWithLogitsLoss()
        x_t = torch.from_numpy((x - self.mean_) / self.scale_)
        y_t = torch.from_numpy(y)
        self.loss_history_ = []
        for _ in range(self.epochs):
            order = torch.from_numpy(generator.permutation(len(y)))
            total = 0.0
            for start in range(0, len(y), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(self.network_(x_t[batch]).squeeze(-1), y_t[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            self.loss_history_.append(total / len(y))
        self.network_.eval()
        return self

    def predict_listen(self, features: np.ndarray) -> np.ndarray:
        """P(listen) with the features' leading shape (any number of leading dims)."""
        x = np.asarray(features, np.float32)
        flat = ((x.reshape(-1, x.shape[-1]) - self.mean_) / self.scale_).astype(np.float32)
        with torch.no_grad():
            logits = self.network_(torch.from_numpy(flat)).squeeze(-1).numpy()
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).reshape(x.shape[:-1])

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(n, 2) [P(no listen), P(listen)], as scikit-learn classifiers return."""
        p = self.predict_listen(features).reshape(-1)
        return np.stack([1.0 - p, p], axis=1)

    def score(self, features: np.ndarray, listened: np.ndarray) -> float:
        """Mean log-likelihood per row (higher is better)."""
        p = np.clip(self.predict_listen(features), 1e-7, 1 - 1e-7)
        y = np.asarray(listened, np.float64)
        return float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def impressions_from_decisions(
    decisions: pd.DataFrame,
    item_latents: np.ndarray,  # (N, D) aligned with track_ids
    track_ids: np.ndarray,  # (N,)
    n_betas: int,
    item_logit: np.ndarray | None = None,  # (N,) from item_listen_logits, optional
) -> tuple[np.ndarray, np.ndarray]:
    """Decision-log rows -> (features (n, F), listened (n,)) for ``ClickinessModel.fit``.

    Uses the logged taste, hour/weekday and the chosen candidate's relationship state at
    decision time (the K*R flattened ``candidate_relationship``); rows whose chosen track
    is not in ``track_ids`` are dropped.
    """
    row_of = pd.Index(np.asarray(track_ids, dtype=object)).get_indexer(
        decisions["chosen_track_id"].to_numpy()
    )
    keep = row_of >= 0
    frame = decisions.loc[keep]
    rows = row_of[keep]
    taste = np.stack(frame["user_taste"].to_numpy()).astype(np.float32)
    context = encode_context(frame["hour"].to_numpy(), frame["weekday"].to_numpy())
    chosen = frame["chosen_index"].to_numpy(np.int64)
    relationship = (
        np.stack(
            [
                np.asarray(flat, np.float32)[index * n_betas : (index + 1) * n_betas]
                if len(flat) >= (index + 1) * n_betas
                else np.zeros(n_betas, np.float32)
                for flat, index in zip(
                    frame["candidate_relationship"].to_numpy(), chosen, strict=False
                )
            ]
        )
        if len(frame)
        else np.zeros((0, n_betas), np.float32)
    )
    features = clickiness_features(
        taste, np.asarray(item_latents)[rows], context, relationship,
        None if item_logit is None else np.asarray(item_logit)[rows],
    )  # fmt: skip
    return features, frame["listened"].to_numpy(bool)
