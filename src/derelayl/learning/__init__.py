"""Learning: one participant's training hop (and a round's hops as one batched computation),
the LightningModule contract the hop relies on, and model evaluation. Core: torch only (a
LightningModule is duck-typed, Lightning itself is imported by ``derelayl.models``)."""
