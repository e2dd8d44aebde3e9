"""Identity: users, sessions (JWT + refresh tokens), API keys, and who is calling.

Layers, as in every domain package: ``servicers`` (proto <-> domain) →
``service`` (rules) → ``repository`` (SQL, scoped to the owner). The
credential primitives (``passwords``, ``tokens``, ``api_key_secrets``) and the
in-memory state every replica keeps (``revocations``, ``throttle``,
``authenticator``) sit beside them; ``component`` wires them together.
"""
