"""``benchmarks/deconv.py``'s displacement diagnostic: where a result moved along z matches the reference best."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from support import benchmark_script


def test_the_displacement_table_peaks_where_the_result_meets_the_reference() -> None:
    deconv = benchmark_script("deconv")
    rng = np.random.default_rng(0)
    reference = ndimage.gaussian_filter(rng.random((24, 32, 32)), (2.0, 1.0, 1.0))
    lagging = np.roll(reference, -1, axis=0)  # result slice p holds reference slice p + 1

    lines = deconv.displacement_table({"same": reference, "lagging": lagging}, reference)

    assert lines[0] == "| result | +0 | +0.5 | +1 | +1.5 | +2 |"
    cells = {line.split(" | ")[0][2:]: [float(c) for c in line.strip(" |").split(" | ")[1:]] for line in lines[2:]}
    assert int(np.argmax(cells["same"])) == 0 and int(np.argmax(cells["lagging"])) == 2  # +0 and +1 slice
    assert cells["lagging"][2] > cells["lagging"][0] + 10
