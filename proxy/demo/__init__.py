"""`shadowtap demo`: simulated models, a traffic generator and the one-command tour."""
