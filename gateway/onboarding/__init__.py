"""A gateway's side of the trust lifecycle: setting up, registering with the registry, rotating keys."""
