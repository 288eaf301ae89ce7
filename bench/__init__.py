"""kodestore benchmarks: the store beside the floor (the least work the hardware allows).

``python -m bench --help`` (or ``make bench``); see ``bench/README.md``.
"""
