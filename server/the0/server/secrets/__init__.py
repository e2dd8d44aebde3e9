"""Secret fields of bot configs: found from the custom bot's schema, sealed at rest, never shown."""
