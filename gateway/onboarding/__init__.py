"""A new agency's side of onboarding: setting up a gateway, and asking the registry to change the federation."""
