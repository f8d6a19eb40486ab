"""Timing the step and compiling for accelerators that are not here."""
