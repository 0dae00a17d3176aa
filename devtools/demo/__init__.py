"""The demo origin: a local Bungie-compatible manifest API and CDN for dev, tests and benchmarks."""
