"""Model families (plain torch nets) and the LightningModule that defines one hop."""
