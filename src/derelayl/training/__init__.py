"""How a hop is executed on a LightningModule."""
