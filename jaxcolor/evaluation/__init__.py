"""Scoring colorizations: metrics, FID, evaluation over a split, reports."""
