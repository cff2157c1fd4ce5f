"""compare-policies' candidate-pool option: validated up front, today's pool by default."""

import pytest

from rl.decision.candidate_pool import DEFAULT_POOL, MULTI_SOURCE_POOL
from rl.experiments.compare_policies import CompareSettings


def test_pool_option_is_parsed_and_validated_before_any_work():
    assert CompareSettings().pool_config().quotas == DEFAULT_POOL.quotas
    multi = CompareSettings(pool=MULTI_SOURCE_POOL.spec(), seed=3).pool_config()
    assert multi.quotas == MULTI_SOURCE_POOL.quotas and multi.seed == 3 and multi.k == 10
    with pytest.raises(ValueError, match="unknown pool source"):
        CompareSettings(pool="song=4,radio=1")
    with pytest.raises(ValueError, match=r"k must be in \[4, 50\]"):
        CompareSettings(pool="song=2")
