"""Many conversions at once (`ckpt batch`): items, worker processes, a Dask cluster."""
