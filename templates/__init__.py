"""Jinja sbatch templates shipped with pyexp."""
