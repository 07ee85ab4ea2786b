"""Write use cases of the tenants app, split by sub-domain."""
