"""The domain core below everything but pricing: database, errors, audit, settings, input rules."""
