"""Federated learning: the round runner and the strategies (client-side corrections and the
server's aggregation) it is parametrised by."""
