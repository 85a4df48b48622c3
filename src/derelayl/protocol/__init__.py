"""The DeRelayL protocol (SPEC section 2): its parameters, the economy's state, the round as a
sequence of named phases, the runner, the hash-chained ledger, incentive schemes and royalties,
participants' behaviours and economics, performance (quality) models and the model store.
Core: no I/O, no tracking."""
