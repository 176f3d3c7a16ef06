"""shadowtap: a sidecar proxy that mirrors LLM traffic to candidate models and scores them."""

__version__ = "0.1.0"
