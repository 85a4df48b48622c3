"""derelayl: reproducible experiments for decentralized relay learning."""

__version__ = "0.1.0"
