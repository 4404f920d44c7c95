"""Shard writers: WebDataset tars and Zarr v3 stores, both written atomically."""
