"""LightningDataModules, data sources, tokenizers, samplers and collators."""
