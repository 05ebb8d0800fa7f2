"""Micro-benchmarks of the compiled core and the speed-up guard (see conftest.py).

A package, so that its conftest and helpers do not shadow ``tests/conftest.py``
when one ``pytest`` run collects both folders.
"""
