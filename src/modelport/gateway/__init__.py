"""The gateway: one published port in front of model services (routing, switching, draining)."""
