"""What the test folders share besides fixtures: tiny models, data writers, sizes.

On the test path through ``pythonpath = tests`` (setup.cfg), so any test or conftest
imports it as ``from helpers.<module> import ...``, whichever folders pytest collects.
"""
