"""`verify` judges its pairs as `run` does: a pair that load hit on one side only is set
aside (and replaced), so one burst cannot drag the verified figure."""

import autotune


def test_a_burst_on_one_side_is_set_aside_and_does_not_move_the_figure():
    old = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00]
    new = [0.90, 0.91, 0.89, 0.90, 0.92, 0.88, 0.90, 0.91, 0.89, 0.90]
    delta, interval, set_aside = autotune._verify_change(old, new)
    assert set_aside == 0 and -10.5 < delta < -9.5
    burst = list(old)
    burst[3] = 2.0  # the baseline's execution ran under a burst of load
    delta_burst, _, set_aside = autotune._verify_change(burst, new)
    assert set_aside == 1
    assert abs(delta_burst - delta) < 0.5


def test_unequal_load_readings_set_a_pair_aside():
    old = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00, 1.01]
    new = [0.95, 0.96, 0.94, 0.95, 0.97, 0.93, 0.95, 0.96]
    quiet = {"others": 0.1, "cpus": 2, "stall": 0.0, "wall": 1.0}
    busy = {"others": 1.5, "cpus": 2, "stall": 0.0, "wall": 1.0}
    loads = [(quiet, quiet)] * 7 + [(quiet, busy)]
    _, _, set_aside = autotune._verify_change(old, new, loads)
    assert set_aside == 1
    assert autotune._verify_change(old, new, [(quiet, quiet)] * 8)[2] == 0
