"""Scorers: how far a shadow's answer is from the primary's, as a number in [0, 1]."""
