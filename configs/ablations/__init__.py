"""Sweeps over the configs (launch/sweep.py); shared rows in configs.ablations.sweeps_common."""
