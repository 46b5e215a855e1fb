"""Step-time measurement on a bare machine (``bench perf``): no tracking or plotting stack.

``harness`` times every registered method against SGD; ``kernels`` counts the device
kernels of a step with the PyTorch profiler.
"""
