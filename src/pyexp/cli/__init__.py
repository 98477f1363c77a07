"""Thin command-line front ends over the layers."""
