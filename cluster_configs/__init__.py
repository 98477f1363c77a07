"""Cluster configs shipped with pyexp: one JSON per cluster."""
