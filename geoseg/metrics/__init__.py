"""Scores shared by training, tuning and evaluation: pixel counts, thresholds, and objects
matched one to one."""
