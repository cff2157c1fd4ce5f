import pytest

from services.core.batch_wait import LoneRequestWait


def test_a_lone_request_does_not_wait_and_company_restores_the_wait():
    wait = LoneRequestWait(0.002)
    assert wait.wait_for(in_flight=1) == 0.0
    assert wait.wait_for(in_flight=2) == 0.002  # another request is open: batch with it
    for _ in range(3):
        wait.observe(32)  # under load
    assert wait.wait_for(in_flight=1) == 0.002  # a gap in a busy stream still waits
    for _ in range(30):
        wait.observe(1)  # back to one request at a time
    assert wait.wait_for(in_flight=1) == 0.0


def test_running_mean_against_a_loop_and_switch_off():
    wait = LoneRequestWait(0.001, smoothing=0.5)
    mean = 1.0
    for size in (4, 1, 1, 8, 1):
        wait.observe(size)
        mean = 0.5 * mean + 0.5 * size
    assert wait.mean_batch_size == pytest.approx(mean)
    assert LoneRequestWait(0.001, enabled=False).wait_for(in_flight=1) == 0.001
    with pytest.raises(ValueError, match="wait_s must be >= 0"):
        LoneRequestWait(-1.0)
