"""Tools around the product, not the product: the local demo origin and the `make dev` stack."""
