"""Reliability and security tests: the bad-input catalogue (mirrored in docs/reliability.md), kill and
resume, model files as data, determinism, and property-based fuzzing of readers and the tiler."""
