"""Experiment configs (ml_collections), installed with the project so they import by one name.

The entry point loads a config by path (`--config=configs/<file>.py[:arg]`); a config that builds
on another imports it as `from configs import <name>`, never through sys.path.
"""
