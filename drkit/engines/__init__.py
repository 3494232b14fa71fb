"""Engines: restic, S3 storage, manifest, keys, checks. Mechanism, no policy."""
