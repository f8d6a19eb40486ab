"""Colorizing photos and films with a trained run or an artifact."""
