"""Training methods: one LightningModule each, sharing ``ClassifierModule``."""
