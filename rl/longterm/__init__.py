"""Long-term value (the paper): relationship states, taste, clickiness, stickiness,
Q-scorers, the simulated A/B test and the data-efficiency study.

Flow: feedback log --(Ray Data, ``log_prep``)--> listen days --> relationship states
(``relationship_states``), taste vectors (``taste``), discovery dataset and stickiness
vectors (``stickiness``); logged impressions --> clickiness (``clickiness``); both -->
Q-scorers (``q_scoring``, also usable as ``DecisionPolicy``) --> simulated A/B test
(``ab_test``) and the estimators of ``data_efficiency``. Everything but ``log_prep`` is
plain numpy/torch.
"""
