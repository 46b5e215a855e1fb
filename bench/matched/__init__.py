"""Accuracy at sparsity matched by construction (DESIGN §8, ``python -m bench matched``).

Every sparsifying method is brought to each target sparsity s itself: a method with a
``final_sparsity`` knob (GMP) is set to s; a penalty method has its penalty weight
calibrated on the validation split (:mod:`bench.matched.calibration`) until its final
sparsity is within the tolerance of s. Each calibrated configuration is then retrained
with the suite's fresh, paired seeds and reported on test (:mod:`bench.matched.study`,
:mod:`bench.matched.table`).
"""
