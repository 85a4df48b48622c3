"""The algorithms a study compares, each a runner over participants' data: the sequential relay
(with its schedules), federated learning (a runner and pluggable strategies), and the two
reference points (local training, centralized training). DeRelayL itself is the protocol
(``derelayl.protocol``). Core: no I/O, no tracking."""
